"""Who may see what: operators see every district, a district admin only their own."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rosterdrop.districts.models import District, time_zone_name

TOKEN_PREFIX = "rd_"


class Profile(models.Model):
    """Links a web user to the one district they administer (operators have none), and the
    time zone they read times in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    district = models.ForeignKey(
        District, null=True, blank=True, on_delete=models.CASCADE, related_name="admins"
    )
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        validators=[time_zone_name],
        help_text="IANA name the console shows this person's times in; blank = the district's "
        "(on its pages, or the one they administer), else the server's.",
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
    name = models.CharField(
        max_length=100, blank=True, help_text="What uses it, e.g. nightly export."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Blank = never.")
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.hint}… ({self.user})"

    @classmethod
    def issue(cls, user, name: str = "", days: int | None = None) -> str:
        """Create a token and return it in clear text, the only time it is ever shown."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = timezone.now() + timedelta(days=days) if days else None
        cls.objects.create(
            user=user, digest=digest(token), hint=token[:10], name=name, expires_at=expires
        )
        return token

    @classmethod
    def valid(cls):
        """Tokens that still open the API: not expired, of an active user."""
        return cls.objects.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()), user__is_active=True
        )

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
