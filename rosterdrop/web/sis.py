"""The files of an upload as the district sent them (no extraction to disk)."""

import contextlib
from collections.abc import Iterator

from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import local_copy
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.reader import limits
from rosterdrop.ingest.unpack import Member, is_zip, unpack


@contextlib.contextmanager
def members(upload: Upload | None) -> Iterator[dict[str, Member]]:
    """The CSV files of an upload by name, readable while the block runs: a zip's members, or
    the file itself; none once retention deleted it."""
    with local_copy(upload) if upload else contextlib.nullcontext() as path:
        if path is None or upload is None:
            yield {}
        elif is_zip(path):
            try:
                found = {m.name: m for m in unpack([path], limits())}
            except Failure:
                found = {}
            yield found
        else:
            raw = Member(upload.filename, upload.size, lambda: path.open("rb"), "")
            yield {upload.filename: raw}
