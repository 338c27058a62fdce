"""One row per security-relevant event. Rows are written once and never changed."""

from django.db import models


class AuditEvent(models.Model):
    class Kind(models.TextChoices):
        LOGIN_OK = "login_ok"
        LOGIN_FAILED = "login_failed"
        LOGIN_REFUSED = "login_refused"  # banned IP, IP not allowed, too many attempts
        BAN = "ban"
        CONNECTION_REFUSED = "connection_refused"
        UPLOAD = "upload"
        UPLOAD_ABORTED = "upload_aborted"
        DOWNLOAD = "download"
        ADMIN = "admin"
        RETENTION = "retention"  # raw uploads deleted, and where

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    login = models.CharField(max_length=150, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.kind} {self.login} {self.ip or ''}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit events are append-only")


def record(kind: str, *, login: str = "", ip: str | None = None, detail: str = "") -> AuditEvent:
    """Append one event; callers pass no row contents or passwords (PII stays out)."""
    return AuditEvent.objects.create(kind=kind, login=login[:150], ip=ip, detail=detail)
