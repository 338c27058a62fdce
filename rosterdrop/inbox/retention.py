"""Retention: raw uploads really deleted once they are older than the configured number of days.

Roster files are student data; keeping them for ever is a liability. The upload's record stays
(name, size, sha256, outcome) so history still reads; only the bytes go. Files still waiting
for import, or behind a sync held for approval, are kept until that is settled.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import stored_file


def expired(now: datetime | None = None):
    """Uploads whose bytes the retention setting says must go now."""
    days = settings.UPLOAD_RETENTION_DAYS
    if days <= 0:
        return Upload.objects.none()
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return (
        Upload.objects.filter(received_at__lt=cutoff, purged_at__isnull=True)
        .exclude(stored_path="")
        .exclude(status=Upload.Status.RECEIVED)
        .exclude(syncs__status="held")
    )


def purge(now: datetime | None = None) -> list[Upload]:
    """Delete the raw bytes of expired uploads; return the uploads purged."""
    now = now or timezone.now()
    purged = []
    for upload in expired(now):
        stored_file(upload).unlink(missing_ok=True)
        upload.stored_path = ""
        upload.purged_at = now
        upload.save(update_fields=["stored_path", "purged_at"])
        purged.append(upload)
    return purged
