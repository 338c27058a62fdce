"""OAuth 2.0 client credentials: clients an operator creates, the tokens they get, revocation."""

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from rosterdrop.accounts.models import digest
from rosterdrop.oneroster.models import SCOPE_PREFIX, SCOPES, AccessToken, Client


class OAuthError(Exception):
    """An RFC 6749 error answer of the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def short_scope(scope: str) -> str:
    """`roster.readonly` for the scope's full URI or its short name."""
    return scope.removeprefix(SCOPE_PREFIX)


def create_client(name: str, district, scopes: list[str]) -> tuple[Client, str]:
    """A new client and its secret, which is shown once and kept only as a digest."""
    wanted = [short_scope(s) for s in scopes] or list(SCOPES)
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {', '.join(unknown)}; one of: {', '.join(SCOPES)}")
    secret = secrets.token_urlsafe(32)
    client = Client.objects.create(
        name=name,
        district=district,
        client_id=secrets.token_hex(12),
        secret_digest=digest(secret),
        scopes=" ".join(s for s in SCOPES if s in wanted),
    )
    return client, secret


def revoke_client(client: Client) -> None:
    """The client gets no more tokens and the ones it holds stop working."""
    now = timezone.now()
    Client.objects.filter(pk=client.pk, revoked_at=None).update(revoked_at=now)
    client.tokens.filter(revoked_at=None).update(revoked_at=now)


@dataclass(frozen=True)
class Issued:
    token: str
    scopes: list[str]
    expires_in: int


def authenticate(client_id: str, secret: str) -> Client:
    """The client, if not revoked and the secret is its own."""
    client = Client.objects.filter(client_id=client_id, revoked_at=None).first()
    if client is None or not hmac.compare_digest(client.secret_digest, digest(secret)):
        raise OAuthError("invalid_client", "Unknown client or wrong secret.", status=401)
    return client


def issue_token(client_id: str, secret: str, scope: str) -> Issued:
    """A token for a client that proved its secret, for the scopes asked (all the client's
    when none are)."""
    client = authenticate(client_id, secret)
    allowed = client.scopes.split()
    asked = [short_scope(s) for s in scope.split()] or allowed
    if not set(asked) <= set(allowed):
        raise OAuthError("invalid_scope", f"This client may ask only for: {' '.join(allowed)}.")
    token = secrets.token_urlsafe(32)
    seconds = settings.ONEROSTER_TOKEN_SECONDS
    AccessToken.objects.create(
        client=client,
        digest=digest(token),
        scopes=" ".join(asked),
        expires_at=timezone.now() + timedelta(seconds=seconds),
    )
    return Issued(token=token, scopes=asked, expires_in=seconds)


def token_for(token: str) -> AccessToken | None:
    """The valid (not expired, not revoked) token, with its client and district."""
    return (
        AccessToken.objects.select_related("client__district")
        .filter(
            digest=digest(token),
            revoked_at=None,
            client__revoked_at=None,
            expires_at__gt=timezone.now(),
        )
        .first()
    )


def revoke_token(token: str, client: Client) -> None:
    """RFC 7009: the client's token stops working; an unknown token is no error."""
    client.tokens.filter(digest=digest(token), revoked_at=None).update(revoked_at=timezone.now())
