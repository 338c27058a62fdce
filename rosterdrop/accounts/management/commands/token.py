"""`rosterdrop token create|list|revoke`: API bearer tokens, the same ones the console lists."""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from rosterdrop.accounts.models import ApiToken
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.cli import ActionCommand


def _time(value) -> str:
    return value.isoformat(timespec="seconds") if value else ""


class Command(ActionCommand):
    help = "API tokens: create one for a user (printed once; send as 'Authorization: Bearer')."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        create = sub.add_parser("create", help="Create a token for a web user.")
        create.add_argument("email")
        create.add_argument("--name", default="", help="What uses it, e.g. 'nightly export'.")
        create.add_argument(
            "--expires-days", type=int, help="Valid this many days (default: ever)."
        )
        listing = sub.add_parser("list", help="Tokens (never their secret), newest first.")
        listing.add_argument("email", nargs="?", help="Only this user's.")
        listing.add_argument("--json", action="store_true", dest="as_json")
        revoke = sub.add_parser("revoke", help="Revoke a token by its ID (see list).")
        revoke.add_argument("id", type=int)

    def do_create(self, email: str, name: str, expires_days: int | None, **_):
        user = get_user_model().objects.filter(username=email, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user {email}")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be 1 or more")
        token = ApiToken.issue(user, name=name, days=expires_days)
        record(AuditEvent.Kind.ADMIN, login="cli", detail=f"API token {token[:10]}… for {email}")
        self.stdout.write(token)

    def do_list(self, email: str | None, as_json: bool, **_):
        tokens = ApiToken.objects.select_related("user")
        if email:
            tokens = tokens.filter(user__username=email)
        rows = [
            {
                "id": t.pk,
                "user": t.user.get_username(),
                "name": t.name,
                "hint": t.hint,
                "created": _time(t.created_at),
                "expires": _time(t.expires_at),
                "last_used": _time(t.last_used_at),
                "expired": t.expired,
            }
            for t in tokens
        ]
        if as_json:
            self.stdout.write(json.dumps(rows))
            return
        for r in rows:
            state = "expired" if r["expired"] else f"expires {r['expires'] or 'never'}"
            self.stdout.write(
                f"{r['id']:>5}  {r['hint']}…  {r['user']}  {r['name'] or '-'}  {state}  "
                f"last used {r['last_used'] or 'never'}"
            )

    def do_revoke(self, id: int, **_):
        token = ApiToken.objects.select_related("user").filter(pk=id).first()
        if token is None:
            raise CommandError(f"no API token {id}")
        token.delete()
        owner = token.user.get_username()
        record(
            AuditEvent.Kind.ADMIN, login="cli", detail=f"revoked API token {token.hint}… of {owner}"
        )
        self.stdout.write(f"revoked {token.hint}…")
