"""`rosterdrop defender list|unban IP`: see and lift the brute-force defender's bans.

A district behind one NAT address can lock itself out with a misconfigured SIS job; the
operator lifts the ban once the job is fixed, instead of waiting out an escalating ban.
"""

import ipaddress
import json as jsonlib

from django.core.management.base import CommandError
from django.utils import timezone

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.cli import ActionCommand
from rosterdrop.intake.models import Ban


class Command(ActionCommand):
    help = "List the source IPs the defender scores or bans, or lift a ban."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        listing = sub.add_parser("list", help="IPs with a failure score or a ban.")
        listing.add_argument("--json", action="store_true")
        listing.add_argument("--banned", action="store_true", help="Only IPs banned now.")
        unban = sub.add_parser("unban", help="Lift an IP's ban and forget its score and history.")
        unban.add_argument("ip")

    def do_list(self, json: bool = False, banned: bool = False, **_):
        now = timezone.now()
        rows = [
            {
                "ip": b.ip,
                "banned_until": (
                    b.banned_until.isoformat() if b.banned_until and b.is_banned(now) else None
                ),
                "bans": b.ban_count,
                "score": b.score,
            }
            for b in Ban.objects.all()
            if b.is_banned(now) or not banned
        ]
        if json:
            self.stdout.write(jsonlib.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No IP is scored or banned.")
        for r in rows:
            until = f"banned until {r['banned_until']}" if r["banned_until"] else "not banned"
            self.stdout.write(f"{r['ip']}\t{until}\t{r['bans']} ban(s)\tscore {r['score']}")

    def do_unban(self, ip: str, **_):
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise CommandError(f"{ip!r} is not an IP address") from None
        ban = Ban.objects.filter(ip=ip).first()
        if ban is None:
            raise CommandError(f"the defender has nothing on {ip}")
        was_banned = ban.is_banned(timezone.now())
        ban.delete()
        record(AuditEvent.Kind.ADMIN, ip=ip, detail="defender ban lifted (cli)")
        state = "ban lifted" if was_banned else "not banned; its score is cleared"
        self.stdout.write(f"{ip}: {state}.")
