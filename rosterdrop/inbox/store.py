"""Keeping received files: copied into the data folder under their sha256, then recorded."""

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload


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
