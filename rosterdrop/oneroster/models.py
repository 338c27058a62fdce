"""OAuth 2.0 clients of the OneRoster service, one per vendor app and district, and the access
tokens they were given. Only SHA-256 digests of secrets and tokens are kept."""

from django.db import models

from rosterdrop.districts.models import District

SCOPE_PREFIX = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
SCOPES = ("roster-core.readonly", "roster.readonly", "roster-demographics.readonly")


class Client(models.Model):
    """A vendor app allowed to read one district's roster through the OneRoster service."""

    name = models.CharField(max_length=100)
    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="+")
    client_id = models.CharField(max_length=64, unique=True)
    secret_digest = models.CharField(max_length=64)
    # Short scope names (SCOPES), space-separated, as OAuth writes a scope list.
    scopes = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"


class AccessToken(models.Model):
    """A bearer token issued to a client: valid until it expires or its client is revoked."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="tokens")
    digest = models.CharField(max_length=64, unique=True)
    scopes = models.CharField(max_length=200)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
