"""A district's upload folder, as SFTP and FTPS both show it: one flat folder, no way out.

The path rules (canonicalise once at the edge, refuse links, check containment) and the
completion of an upload (temp file, then the final name, then the inbox and the worker) live
here so that every protocol front end applies exactly the same ones. Refusals are OSErrors
with an errno and a sentence, which asyncssh and pyftpdlib both turn into a protocol reply.

Where the folder is: with the data folder as storage (the embedded default), a folder of it
per district (`district_root`). With uploads in shared storage (S3), the front ends of a
deployment must all show the same files, so the folder is the inbox itself (`shared`): the
uploads shown under a name (`Upload.folder_name`), their bytes read from storage; only a file
still waiting for its rename (a staging name) stays on the front end that receives it.
"""

import contextlib
import errno
import logging
import os
import posixpath
import shutil
import stat
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet

from rosterdrop import process, storage
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.districts.models import District
from rosterdrop.inbox import retention, store
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.signals import upload_waiting
from rosterdrop.ingest import states

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
    return store.upload_folder(slug)


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


def _plain(st: os.stat_result, root: Path, kept: set[tuple[int, int]] | None = None) -> bool:
    """Whether a file of the folder `root` is one to serve: a regular file with one name, or
    one of the district's uploads, also named in its inbox (`kept`: store.kept_inodes, read
    if not given); never a link to a file from elsewhere."""
    if not stat.S_ISREG(st.st_mode):
        return False
    if st.st_nlink == 1:
        return True
    return (st.st_dev, st.st_ino) in (store.kept_inodes(root.name) if kept is None else kept)


def check_regular(st: os.stat_result, root: Path) -> None:
    """Only plain files of the folder `root` are served: symlinks, hard links (but to the
    district's own uploads in its inbox) and special files are refused."""
    if stat.S_ISLNK(st.st_mode):
        raise refused("Links are not allowed")
    if not stat.S_ISREG(st.st_mode):
        raise refused("Not a regular file")
    if not _plain(st, root):
        raise refused("Hard links are not allowed")


def resolve(root: Path, path: str | bytes) -> tuple[str, Path]:
    """(name, local path) for a client path inside root (a realpath); refuse anything else."""
    name = virtual_name(path)
    if not name:
        return "", root
    local = root / name
    with contextlib.suppress(FileNotFoundError):
        check_regular(os.lstat(local), root)
    real = os.path.realpath(local)
    if os.path.commonpath([str(root), real]) != str(root):
        raise refused("Outside your folder")
    return name, local


def visible_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """What a listing shows: the plain files the district sent (never links)."""
    kept: set[tuple[int, int]] | None = None  # read once, if a file has more than one name
    with os.scandir(root) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and kept is None:
                kept = store.kept_inodes(root.name)
            if _plain(st, root, kept):
                yield entry.name, st


def shared() -> bool:
    """Whether the folder is the deployment's (uploads in shared storage), not this host's."""
    return not storage.backend().local


def _kept(district: District) -> "QuerySet[Upload]":
    """The uploads a shared folder shows: under a name, their bytes still kept."""
    return (
        Upload.objects.filter(district=district, purged_at__isnull=True)
        .exclude(folder_name="")
        .exclude(stored_path="")
    )


def _shown(district: District, name: str) -> Upload | None:
    """The upload a shared folder shows under `name` (the latest, should two front ends have
    completed the same name at once)."""
    return _kept(district).filter(folder_name=name).order_by("-pk").first()


def _attributes(upload: Upload) -> os.stat_result:
    """An upload as a plain file's attributes: its size and when it arrived."""
    seconds = upload.received_at.timestamp()
    ns, whole = round(seconds * 1e9), int(seconds)
    fields = (stat.S_IFREG | 0o644, 0, 0, 1, os.getuid(), os.getgid(), upload.size)
    times = {f"st_{t}time{unit}": v for t in "amc" for unit, v in (("", seconds), ("_ns", ns))}
    return os.stat_result((*fields, whole, whole, whole), times)


def _is_local(name: str) -> bool:
    """Whether `name` is a file of this host's folder (everything but a shared folder's kept
    files)."""
    return not shared() or is_staging_name(name)


def listing(district: District, root: Path) -> list[tuple[str, os.stat_result]]:
    """What a listing of the district's folder shows, by name."""
    files = dict(visible_files(root))
    if shared():
        for upload in _kept(district).order_by("pk"):
            files[upload.folder_name] = _attributes(upload)
    return list(files.items())


def lookup(district: District, root: Path, name: str) -> os.stat_result | None:
    """A file's attributes (a link or special file refused), None if there is no such file."""
    if _is_local(name):
        try:
            st = os.lstat(root / name)
        except FileNotFoundError:
            return None
        check_regular(st, root)
        return st
    upload = _shown(district, name)
    return _attributes(upload) if upload else None


def open_file(district: District, root: Path, name: str) -> BinaryIO:
    """A file's bytes for reading (a download, or where a resumed upload starts): never
    through a link; a shared folder's file as a checked copy from storage, already unlinked."""
    if _is_local(name):
        fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            check_regular(os.fstat(fd), root)
        except OSError:
            os.close(fd)
            raise
        return os.fdopen(fd, "rb", buffering=0)
    upload = _shown(district, name)
    if upload is None:
        raise missing("No such file")
    work = settings.DATA_DIR / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    work = process.mkdtemp("download-", work)  # named for recovery, were this process to die
    try:
        store.fetch(upload, work / "file")
        return open(work / "file", "rb", buffering=0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove(district: District, root: Path, name: str, login: str, ip: str | None) -> None:
    """Delete a file from the folder. A shared folder's file is its upload: one no import has
    taken yet is withdrawn (`_withdraw`); one an import took stays in the inbox, unlisted."""
    if _is_local(name):
        os.remove(root / name)
        return
    upload = _shown(district, name)
    if upload is None or not _kept(district).filter(folder_name=name).update(folder_name=""):
        raise missing("No such file")
    _withdraw(upload, login, ip)


def _withdraw(upload: Upload, login: str, ip: str | None) -> None:
    """An upload deleted from the shared folder before any import took it is gone, as the
    district meant (what SFTPGo does with a deleted file): never imported, its bytes deleted
    now (unless another upload keeps the same ones), audited. An import that took it meanwhile
    keeps it: that upload has a sync, and its record stays."""
    untaken = Upload.objects.filter(pk=upload.pk, syncs__isnull=True).exists()
    why = f"Deleted from the upload folder by {login} before its import began; not imported."
    if untaken and states.settle([upload], Upload.Status.EXPIRED, why, waiting_only=True):
        retention.discard(upload, login, ip)


def _show(upload: Upload, name: str) -> None:
    """List a kept upload under `name` in its shared folder, in place of any file so named."""
    with transaction.atomic():
        _kept(upload.district).filter(folder_name=name).update(folder_name="")
        Upload.objects.filter(pk=upload.pk).update(folder_name=name)


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
    if shared():
        _show(upload, name)
        source_path.unlink()
    else:
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
    (WinSCP's name.filepart and friends), replacing any file of that name. In a shared
    folder a kept file is renamed in the inbox, and cannot become a staging name again."""
    if lookup(district, old.parent, old.name) is None:
        raise missing("No such file")
    if old == new:
        return
    finishing = is_staging_name(old.name) and not is_staging_name(new.name)
    exists = lookup(district, new.parent, new.name) is not None
    if exists and not overwrite and not finishing:
        raise FileExistsError(errno.EEXIST, "File already exists")
    if finishing:
        complete(district, new.name, old, source, login, ip)
    elif _is_local(old.name) and _is_local(new.name):
        os.replace(old, new)
    elif _is_local(new.name):
        raise refused("A file kept in the folder cannot be given a temporary name")
    elif (upload := _shown(district, old.name)) is not None:  # unless removed meanwhile
        _show(upload, new.name)
    else:
        raise missing("No such file")


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
