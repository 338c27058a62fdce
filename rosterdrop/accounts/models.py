"""Who may see what: operators see every district, a district admin only their own."""

import hashlib
import secrets

from django.conf import settings
from django.db import models

from rosterdrop.districts.models import District

TOKEN_PREFIX = "rd_"


class Profile(models.Model):
    """Links a web user to the one district they administer (operators have none)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    district = models.ForeignKey(
        District, null=True, blank=True, on_delete=models.CASCADE, related_name="admins"
    )

    def __str__(self) -> str:
        return f"{self.user} ({self.district or 'operator'})"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the JSON API; only its SHA-256 is kept, so a leak of the DB is inert."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=12, help_text="First characters, to tell tokens apart.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.hint}… ({self.user})"

    @classmethod
    def issue(cls, user) -> str:
        """Create a token and return it in clear text, the only time it is ever shown."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        cls.objects.create(user=user, digest=digest(token), hint=token[:10])
        return token
