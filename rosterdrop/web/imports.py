"""Web uploads: kept in the inbox exactly as sent, then imported as a job (`ingest.jobs`)."""

import os
from pathlib import Path

from django.core.files.uploadedfile import UploadedFile

from rosterdrop import process
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import check_quota, receive
from rosterdrop.ingest.engine import tmp_dir


def receive_files(district, files: list[UploadedFile], login: str, ip: str | None) -> list[Upload]:
    """Keep each file in the inbox exactly as sent, like an SFTP upload; none if they do not
    fit the district's quota (store.QuotaExceeded)."""
    check_quota(district, sum(f.size for f in files))
    uploads = []
    for f in files:
        fd, tmp = process.mkstemp("web-", tmp_dir())
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in f.chunks():
                    out.write(chunk)
            name = Path(f.name).name  # browsers may send a path; the name is what matches
            upload = receive(district, name, Path(tmp), Upload.Source.WEB, login, ip)
        finally:
            os.unlink(tmp)
        record(
            AuditEvent.Kind.UPLOAD,
            login=login,
            ip=ip,
            detail=f"web upload {upload.pk} {name} ({upload.size} bytes) to {district.slug}",
        )
        uploads.append(upload)
    return uploads
