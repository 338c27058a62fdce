"""A raw upload handed back exactly as received, however it is asked for (the console or the
API): the same retention check, the same audit record, the same attachment."""

from django.http import FileResponse

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import open_stored


class NotKept(Exception):
    """Retention deleted the upload's bytes; its record and history stay."""


def raw_download(upload: Upload, *, login: str, ip: str | None, via: str) -> FileResponse:
    """The file as an attachment under its original name, and the download in the audit log;
    NotKept (nothing audited) once retention has deleted it."""
    try:
        raw = open_stored(upload)
    except FileNotFoundError:
        raise NotKept("This file is no longer kept (retention).") from None
    record(
        AuditEvent.Kind.DOWNLOAD,
        login=login,
        ip=ip,
        detail=f"{via}: raw upload {upload.pk} {upload.filename} of {upload.district.slug}",
    )
    return FileResponse(
        raw,
        as_attachment=True,
        filename=upload.filename,
        content_type="application/octet-stream",
    )
