"""Keeping received files: copied into the data folder under their sha256, then recorded."""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload

# Large files are handed to the disk as they are written, a window at a time: the final fsync
# then has little left to do, and the kernel does not stall the copy to flush it all at once.
WRITEBACK_WINDOW = 64 << 20


def _start_writeback(out, start: int) -> None:
    """Start writing a window that was just written; its pages stay cached for the import.

    POSIX_FADV_DONTNEED starts writeback of dirty pages and drops only clean ones.
    """
    out.flush()
    os.posix_fadvise(out.fileno(), start, WRITEBACK_WINDOW, os.POSIX_FADV_DONTNEED)


def inbox_dir(district: District) -> Path:
    return settings.DATA_DIR / "inbox" / district.slug


def receive(
    district: District,
    filename: str,
    source_path: Path,
    source: str,
    login: str = "",
    source_ip: str | None = None,
) -> Upload:
    """Copy a complete file into the inbox (temp name, fsync, rename) and record it."""
    folder = inbox_dir(district)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".incoming-")
    size = 0
    with os.fdopen(fd, "wb") as out, source_path.open("rb") as src:
        while block := src.read(1 << 20):
            digest.update(block)
            out.write(block)
            size += len(block)
            if size % WRITEBACK_WINDOW == 0:
                _start_writeback(out, size - WRITEBACK_WINDOW)
        out.flush()
        os.fsync(out.fileno())
    sha = digest.hexdigest()
    upload = Upload.objects.create(
        district=district,
        filename=filename,
        size=size,
        sha256=sha,
        source=source,
        login=login,
        source_ip=source_ip,
        stored_path="",
    )
    final = folder / f"{upload.pk:08d}-{sha[:16]}"
    os.replace(tmp_name, final)
    upload.stored_path = str(final.relative_to(settings.DATA_DIR))
    upload.save(update_fields=["stored_path"])
    return upload


def stored_file(upload: Upload) -> Path:
    return settings.DATA_DIR / upload.stored_path
