"""A district's upload folder, as SFTP and FTPS both show it: one flat folder, no way out.

The path rules (canonicalise once at the edge, refuse links, check containment) and the
completion of an upload (temp file, then the final name, then the inbox and the worker) live
here so that every protocol front end applies exactly the same ones. Refusals are OSErrors
with an errno and a sentence, which asyncssh and pyftpdlib both turn into a protocol reply.
"""

import contextlib
import errno
import logging
import os
import posixpath
import stat
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.districts.models import District
from rosterdrop.inbox import retention, storage, store
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.signals import upload_waiting

log = logging.getLogger(__name__)

# Names clients upload to and then rename (WinSCP "name.filepart", "name.part", ".name.tmp").
STAGING_SUFFIXES = (".filepart", ".part", ".tmp")
MAX_NAME_BYTES = 255


def refused(message: str) -> PermissionError:
    return PermissionError(errno.EACCES, message)


def missing(message: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, message)


def is_staging_name(name: str) -> bool:
    """A temporary name: kept in the folder on close, imported only once renamed."""
    return name.startswith(".") or name.endswith(STAGING_SUFFIXES)


def district_root(slug: str) -> Path:
    return settings.DATA_DIR / "sftp" / slug


def staging_dir(slug: str) -> Path:
    """Uploads in progress: outside the district's folder, on the same filesystem."""
    return settings.DATA_DIR / "sftp-tmp" / slug


def virtual_name(path: str | bytes) -> str:
    """Canonicalise a client path once, at the edge: "" for the folder, else one file name.

    `..` never climbs above `/` (lexical, like a chroot); names are kept exactly as sent (no
    case folding or Unicode normalisation, so no variant can alias another name).
    """
    if isinstance(path, bytes):
        try:
            path = path.decode("utf-8")
        except UnicodeDecodeError:
            raise missing("File names must be UTF-8") from None
    if "\\" in path or any(unicodedata.category(ch) == "Cc" for ch in path):
        raise refused("File name contains a forbidden character")
    parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
    if not parts:
        return ""
    if len(parts) > 1:
        raise missing("No such file (this folder has no subfolders)")
    if len(parts[0].encode()) > MAX_NAME_BYTES:
        raise refused("File name too long")
    return parts[0]


def check_regular(st: os.stat_result) -> None:
    """Only plain files are served: symlinks, hard links and special files are refused."""
    if stat.S_ISLNK(st.st_mode):
        raise refused("Links are not allowed")
    if not stat.S_ISREG(st.st_mode):
        raise refused("Not a regular file")
    if st.st_nlink > 1:
        raise refused("Hard links are not allowed")


def resolve(root: Path, path: str | bytes) -> tuple[str, Path]:
    """(name, local path) for a client path inside root (a realpath); refuse anything else."""
    name = virtual_name(path)
    if not name:
        return "", root
    local = root / name
    with contextlib.suppress(FileNotFoundError):
        check_regular(os.lstat(local))
    real = os.path.realpath(local)
    if os.path.commonpath([str(root), real]) != str(root):
        raise refused("Outside your folder")
    return name, local


def visible_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """What a listing shows: the plain files the district sent (never links)."""
    with os.scandir(root) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                yield entry.name, st


def open_root(slug: str) -> Path:
    """The district's folder (created on first use) as a realpath, and its staging folder."""
    root = district_root(slug)
    root.mkdir(parents=True, exist_ok=True)
    staging_dir(slug).mkdir(parents=True, exist_ok=True)
    return Path(os.path.realpath(root))


def complete(
    district: District,
    name: str,
    source_path: Path,
    source: str,
    login: str,
    ip: str | None,
    sha256: str | None = None,
    sent: storage.Incoming | None = None,
) -> Upload | None:
    """A file closed cleanly under `name`: show it in the folder and, unless it is a staging
    name waiting for its rename, record it in the inbox and wake the worker. `sent`: its
    bytes already on their way to storage."""
    root = district_root(district.slug)
    if is_staging_name(name):
        os.replace(source_path, root / name)
        return None
    try:
        upload = store.receive(district, name, source_path, source, login, ip, sha256, sent)
    except Exception:
        log.exception("could not store upload %s for %s", name, district.slug)
        raise OSError(errno.EIO, "Could not store the file; please retry") from None
    os.replace(source_path, root / name)
    record(
        AuditEvent.Kind.UPLOAD,
        login=login,
        ip=ip,
        detail=f"{name}: {upload.size} bytes, sha256 {upload.sha256}, upload {upload.pk}",
    )
    upload_waiting.send(sender=Upload, upload=upload)
    return upload


def rename(
    district: District,
    old: Path,
    new: Path,
    overwrite: bool,
    source: str,
    login: str,
    ip: str | None,
) -> None:
    """Rename inside the folder; a staging name renamed to a real one completes the upload
    (WinSCP's name.filepart and friends), replacing any file of that name."""
    if not old.exists():
        raise missing("No such file")
    if old == new:
        return
    finishing = is_staging_name(old.name) and not is_staging_name(new.name)
    if new.exists() and not overwrite and not finishing:
        raise FileExistsError(errno.EEXIST, "File already exists")
    if finishing:
        complete(district, new.name, old, source, login, ip)
    else:
        os.replace(old, new)


def aborted(name: str, reason: str, login: str, ip: str | None) -> None:
    """An upload that ended without a clean close: recorded, nothing kept."""
    detail = f"{name}: {reason}; nothing kept"
    record(AuditEvent.Kind.UPLOAD_ABORTED, login=login, ip=ip, detail=detail)


def sweep_old(now: datetime) -> None:
    """Retention of the folders: delete the files in each district's folder (what a listing
    shows) older than ROSTERDROP_RETENTION_DAYS, each deletion audited as the inbox's are."""
    days = settings.UPLOAD_RETENTION_DAYS
    if days <= 0:
        return
    cutoff = (now - timedelta(days=days)).timestamp()
    for district in District.objects.all():
        root = district_root(district.slug)
        for entry in root.glob("*") if root.is_dir() else ():
            st = entry.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                entry.unlink(missing_ok=True)
                record(
                    AuditEvent.Kind.RETENTION,
                    login=retention.AUDIT_LOGIN,
                    detail=f"deleted {entry.relative_to(settings.DATA_DIR)} of {district.slug} "
                    f"from its upload folder (older than {days} days)",
                )
