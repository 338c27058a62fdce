"""Per-IP brute-force defence in the style of SFTPGo's defender, kept in the database.

Failures add to a score inside an observation window; reaching the threshold bans the IP,
and each repeat ban lasts longer. Bans live in the database so several front ends share them.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.intake.models import Ban
from rosterdrop.networks import ip_in, parse_networks


def is_safe(ip: str | None) -> bool:
    """Allow-listed sources are never banned."""
    return ip_in(ip, parse_networks(settings.DEFENDER_SAFELIST))


def is_banned(ip: str | None) -> bool:
    if not ip or is_safe(ip):
        return False
    return Ban.objects.filter(ip=ip, banned_until__gt=timezone.now()).exists()


def add_score(ip: str | None, points: int, reason: str) -> bool:
    """Add failure points for an IP; return True when this pushed it into a ban."""
    if not ip or points <= 0 or is_safe(ip):
        return False
    now = timezone.now()
    window = timedelta(seconds=settings.DEFENDER_OBSERVATION_SECONDS)
    with transaction.atomic():
        ban, _ = Ban.objects.select_for_update().get_or_create(
            ip=ip, defaults={"window_start": now}
        )
        if ban.is_banned(now):
            return False
        if now - ban.window_start > window:
            ban.score, ban.window_start = 0, now
        ban.score += points
        banned = ban.score >= settings.DEFENDER_THRESHOLD
        if banned:
            factor = (1 + settings.DEFENDER_BAN_INCREASE) ** ban.ban_count
            ban.banned_until = now + timedelta(seconds=settings.DEFENDER_BAN_SECONDS * factor)
            ban.ban_count += 1
            ban.score, ban.window_start = 0, now
        ban.save()
    if banned:
        record(
            AuditEvent.Kind.BAN,
            ip=ip,
            detail=f"banned until {ban.banned_until:%Y-%m-%d %H:%M:%S}Z "
            f"(ban {ban.ban_count}) after {reason}",
        )
    return banned
