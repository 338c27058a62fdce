"""The files of an upload as the district sent them (no extraction to disk)."""

from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import stored_file
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.pipeline import limits
from rosterdrop.ingest.unpack import Member, is_zip, unpack


def members(upload: Upload) -> dict[str, Member]:
    """The CSV files of an upload by name: a zip's members, or the file itself."""
    if not upload.stored_path:  # deleted by retention
        return {}
    path = stored_file(upload)
    if not path.exists():
        return {}
    if is_zip(path):
        try:
            return {m.name: m for m in unpack([path], limits())}
        except Failure:
            return {}
    return {upload.filename: Member(upload.filename, upload.size, lambda: path.open("rb"), "")}
