"""`rosterdrop sftp-user add|list|passwd|key-add|remove`: the SFTP logins of districts."""

import json as jsonlib
import secrets
import sys
from pathlib import Path
from typing import Any

import asyncssh
from django.core.management.base import CommandError

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.cli import ActionCommand
from rosterdrop.districts.management.arguments import district_named
from rosterdrop.intake.models import Login, login_name
from rosterdrop.networks import parse_networks


def read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise CommandError("the password must have at least 8 characters")
    return password


class Command(ActionCommand):
    help = "Manage the SFTP logins of districts."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        add = sub.add_parser("add", help="Create a login (a password is generated unless given).")
        add.add_argument("login", nargs="?", help="Omit to build it from --person and the scheme.")
        add.add_argument("--district", required=True, help="District slug.")
        add.add_argument("--person", default="", help="Whose login (for the naming scheme).")
        add.add_argument("--state", default="", help="State code (for the naming scheme).")
        add.add_argument("--password-stdin", action="store_true")
        add.add_argument("--no-password", action="store_true", help="Public keys only.")
        add.add_argument("--allow-ip", action="append", default=[], help="IP or CIDR; repeatable.")
        listing = sub.add_parser("list")
        listing.add_argument("--json", action="store_true")
        passwd = sub.add_parser("passwd", help="Set a new password, read from standard input.")
        passwd.add_argument("login")
        passwd.add_argument("--password-stdin", action="store_true", required=True)
        key_add = sub.add_parser("key-add", help="Authorise an OpenSSH public key file.")
        key_add.add_argument("login")
        key_add.add_argument("pubkey_file")
        remove = sub.add_parser("remove")
        remove.add_argument("login")

    def _login(self, name: str) -> Login:
        try:
            return Login.objects.select_related("district").get(name=name)
        except Login.DoesNotExist:
            raise CommandError(f"no SFTP login {name!r}") from None

    def do_add(
        self,
        login: str | None,
        district: str,
        person: str,
        state: str,
        password_stdin: bool,
        no_password: bool,
        allow_ip: list[str],
        **_,
    ):
        target = district_named(district)
        if not login:
            if not person:
                raise CommandError("give a LOGIN, or --person NAME to build one from the scheme")
            login = login_name(person, target, state)
        if Login.objects.filter(name=login).exists():
            raise CommandError(f"SFTP login {login!r} already exists")
        try:
            parse_networks(" ".join(allow_ip))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        user = Login(district=target, name=login, allowed_ips="\n".join(allow_ip))
        generated = ""
        if password_stdin:
            user.set_password(read_password())
        elif not no_password:
            generated = secrets.token_urlsafe(12)
            user.set_password(generated)
        user.save()
        record(AuditEvent.Kind.ADMIN, login=login, detail=f"sftp login added for {district} (cli)")
        self.stdout.write(f"Created SFTP login {login} for district {district}.")
        if generated:
            self.stdout.write(f"Password (shown once): {generated}")

    def do_list(self, json: bool = False, **_):
        rows: list[dict[str, Any]] = [
            {
                "login": u.name,
                "district": u.district.slug,
                "password": bool(u.password_hash),
                "keys": [k.get_fingerprint("sha256") for k in u.authorized_keys()],
                "allowed_ips": u.allowed_ips.split(),
                "active": u.active,
            }
            for u in Login.objects.select_related("district")
        ]
        if json:
            self.stdout.write(jsonlib.dumps(rows, indent=2))
            return
        for r in rows:
            auth = ["password"] if r["password"] else []
            auth += [f"{len(r['keys'])} key(s)"] if r["keys"] else []
            ips = ",".join(r["allowed_ips"]) or "any IP"
            self.stdout.write(
                f"{r['login']}\t{r['district']}\t{' + '.join(auth) or 'no auth'}\t{ips}"
            )

    def do_passwd(self, login: str, **_):
        user = self._login(login)
        user.set_password(read_password())
        user.save(update_fields=["password_hash"])
        record(AuditEvent.Kind.ADMIN, login=login, detail="sftp password changed (cli)")
        self.stdout.write(f"Password changed for {login}.")

    def do_key_add(self, login: str, pubkey_file: str, **_):
        user = self._login(login)
        try:
            fingerprint = user.add_public_key(Path(pubkey_file).read_text())
        except (OSError, asyncssh.KeyImportError) as exc:
            raise CommandError(f"cannot read a public key from {pubkey_file}: {exc}") from None
        user.save(update_fields=["public_keys"])
        record(AuditEvent.Kind.ADMIN, login=login, detail=f"sftp key added {fingerprint} (cli)")
        self.stdout.write(f"Added key {fingerprint} to {login}.")

    def do_remove(self, login: str, **_):
        self._login(login).delete()
        record(AuditEvent.Kind.ADMIN, login=login, detail="sftp login removed (cli)")
        self.stdout.write(f"Removed SFTP login {login}.")
