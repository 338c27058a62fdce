"""The inbox: every file received, kept byte for byte as it arrived."""

from django.db import models

from rosterdrop.districts.models import District


class UploadStatus(models.TextChoices):
    """Where an upload is; every move is made by ingest.states (`settle`)."""

    RECEIVED = "received"  # waiting for its import
    IMPORTED = "imported"
    UNMATCHED = "unmatched"
    FAILED = "failed"
    EXPIRED = "expired"  # replaced by a newer file of the same name before its import


class Upload(models.Model):
    class Source(models.TextChoices):
        SFTP = "sftp"
        FTPS = "ftps"
        WEB = "web"
        CLI = "cli"

    Status = UploadStatus  # every write goes through ingest.states

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    source = models.CharField(max_length=8, choices=Source.choices)
    login = models.CharField(max_length=150, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    stored_path = models.CharField(max_length=500, help_text="Relative to the data folder.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RECEIVED)
    outcome = models.TextField(blank=True)
    purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the retention setting deleted the raw bytes."
    )
    folder_name = models.CharField(
        max_length=255,
        blank=True,
        help_text="The name it shows under in the district's SFTP/FTPS folder when uploads are "
        "kept in shared storage; empty once deleted there, renamed over or replaced.",
    )

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.district.slug}/{self.filename}"
