"""Keeping received files: stored (the data folder or S3, `storage`) and recorded; the same
bytes received again share the earlier file."""

import contextlib
import errno
import functools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import transaction

from rosterdrop import process, storage
from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.timing import timed


def _inbox_key(slug: str) -> str:
    return f"inbox/{slug}"


def inbox_folder(district: District) -> str:
    """The storage folder (key prefix) of a district's raw uploads."""
    return _inbox_key(district.slug)


def inbox_dir(district: District) -> Path:
    """The district's inbox in the data folder (the default storage)."""
    return settings.DATA_DIR / inbox_folder(district)


def upload_folder(slug: str) -> Path:
    """The district's SFTP/FTPS folder in the data folder (intake.folder shows it), where an
    upload received there is another name of its file in the inbox (a hard link: the inbox
    takes the transfer's own file, storage.LocalFolder.keep)."""
    return settings.DATA_DIR / "sftp" / slug


def kept_inodes(slug: str) -> set[tuple[int, int]]:
    """The files of the district's inbox in the data folder, by (device, inode): what a name
    in its upload folder with more than one link may be (its own upload), unlike a link to a
    file from elsewhere."""
    inbox = settings.DATA_DIR / _inbox_key(slug)
    try:
        with os.scandir(inbox) as entries:
            device = os.stat(inbox).st_dev
            return {(device, entry.inode()) for entry in entries}
    except FileNotFoundError:
        return set()


def incoming(district: District, path: Path) -> storage.Incoming:
    """Where the bytes of a transfer being written at `path` go as they arrive (`receive`
    keeps them, or `Incoming.abort`)."""
    return storage.backend().incoming(inbox_folder(district), path)


@timed("receive")
def receive(
    district: District,
    filename: str,
    source_path: Path,
    source: str,
    login: str = "",
    source_ip: str | None = None,
    sha256: str | None = None,
    sent: storage.Incoming | None = None,
) -> Upload:
    """Keep a complete file in storage (the data folder: temp name, fsync, rename) and record it.

    The row and the file's final name are one transaction: the worker sees the upload only
    once its bytes are durable under the key recorded (never a row without its file).

    `sha256`, when the sender hashed the bytes as they arrived (an SFTP or FTPS transfer), saves
    reading the file again to look for an earlier copy, and is checked against the copy kept;
    `sent`: the same bytes already streamed to storage as they arrived (`incoming`).
    """
    pending = storage.backend().keep(
        inbox_folder(district), source_path, sha256, functools.partial(_earlier, district), sent
    )
    try:
        with transaction.atomic():
            upload = Upload.objects.create(
                district=district,
                filename=filename,
                size=pending.size,
                sha256=pending.sha256,
                source=source,
                login=login,
                source_ip=source_ip,
                stored_path="",
            )
            upload.stored_path = pending.commit(f"{upload.pk:08d}-{pending.sha256[:16]}")
            upload.save(update_fields=["stored_path"])
            process.checkpoint("received")
    except BaseException:  # the row was rolled back: no file without its row either
        pending.abort()
        raise
    return upload


def _earlier(district: District, source: Path, sha: str | None) -> tuple[str, str] | None:
    """(key, sha256) of an earlier upload of the district that kept the same bytes as the file
    `source` (whose hash is `sha`, if known): then they need not be stored again. Only a file
    of a size seen before is hashed."""
    size = source.stat().st_size
    same_size = Upload.objects.filter(district=district, size=size).exclude(stored_path="")
    if not size or not same_size.exists():
        return None
    sha = sha or storage.file_sha256(source)
    earlier = same_size.filter(sha256=sha).order_by("-pk").first()
    return (earlier.stored_path, sha) if earlier else None


def stored_bytes(district: District) -> int:
    """Disk the district's raw uploads take: each distinct content once, since the same bytes
    received again are a hard link to the earlier file (storage.LocalFolder)."""
    kept = Upload.objects.filter(district=district, purged_at__isnull=True).exclude(stored_path="")
    return sum(size for _, size in kept.order_by().values_list("sha256", "size").distinct())


def quota_room(district: District) -> int:
    """Bytes of new raw uploads the district may still keep under its quota (0 when over)."""
    return max(0, district.effective_upload_quota - stored_bytes(district))


def quota_exceeded(district: District) -> str:
    """What the sender of an upload that does not fit the district's quota is told."""
    return (
        f"Storage quota exceeded: the district may keep {district.effective_upload_quota} "
        "bytes of uploads and this file does not fit"
    )


class QuotaExceeded(Exception):
    """Uploads refused before anything is kept: they do not fit the district's quota."""


def check_quota(district: District, size: int) -> None:
    """Refuse (QuotaExceeded) `size` bytes of new uploads past the district's quota_room:
    the rule SFTP and FTPS transfers apply as bytes arrive, for uploads whose size is known."""
    if size > quota_room(district):
        raise QuotaExceeded(quota_exceeded(district))


def open_stored(upload: Upload) -> IO[bytes]:
    """The raw bytes of an upload as received; FileNotFoundError once they are gone."""
    if not upload.stored_path:
        raise FileNotFoundError(errno.ENOENT, f"upload {upload.pk} is no longer kept")
    return storage.backend().open(upload.stored_path)


# Spans of one read closer than this are read as one range (one request to S3, not many).
GAP = 1 << 20


def read_spans(upload: Upload, spans: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each (start, end) span of an upload as received, read by offset (ranged
    reads on S3), not the whole file; FileNotFoundError once they are gone."""
    if not upload.stored_path:
        raise FileNotFoundError(errno.ENOENT, f"upload {upload.pk} is no longer kept")
    kept = storage.backend()
    found: dict[tuple[int, int], bytes] = {}
    ordered = sorted(set(spans))
    i = 0
    while i < len(ordered):
        start, end = ordered[i]
        j = i + 1
        while j < len(ordered) and ordered[j][0] - end < GAP:
            end = max(end, ordered[j][1])
            j += 1
        data = kept.read_range(upload.stored_path, start, end)
        for first, last in ordered[i:j]:
            found[(first, last)] = data[first - start : last - start]
        i = j
    return [found[span] for span in spans]


def fetch(upload: Upload, target: Path) -> None:
    """A local file at `target` with the upload's bytes (a link to the file in the data
    folder, a checked copy from S3); the caller deletes it."""
    storage.backend().fetch(upload.stored_path, target, upload.sha256)


@contextlib.contextmanager
def local_copy(upload: Upload) -> Iterator[Path | None]:
    """The upload's bytes as a local file while the block runs (its file in the data folder,
    or a checked copy from S3 deleted after); None once they are gone."""
    kept = storage.backend()
    if not upload.stored_path or kept.local:
        path = stored_file(upload)
        yield path if upload.stored_path and path.is_file() else None
        return
    work = settings.DATA_DIR / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    work = process.mkdtemp("read-", work)  # named for recovery, were this process to die
    try:
        try:
            fetch(upload, work / "upload")
        except FileNotFoundError:
            yield None
        else:
            yield work / "upload"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stored_file(upload: Upload) -> Path:
    """The upload's file in the data folder (the default storage)."""
    return settings.DATA_DIR / upload.stored_path
