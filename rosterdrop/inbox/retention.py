"""Retention: raw uploads really deleted once they are older than the configured number of days.

Roster files are student data; keeping them for ever is a liability. The upload's record stays
(name, size, sha256, outcome) so history still reads; only the bytes go. Files still waiting
for import, being imported, or behind a sync held for approval, are kept until that is settled.

In the data folder the bytes may have more names than the upload's own: an import works on
hard links to them under `tmp/` (left behind when it crashed), a half-received file in the inbox
may be a link to an earlier upload's (the same bytes sent again share one file), and the
district's SFTP/FTPS folder shows an upload received there under its name (another link). Each
is found by its inode and deleted, the remaining
link count (st_nlink) says whether the bytes are really gone, and each deletion goes to the
audit log. In S3 an upload's object is deleted unless another upload still kept shares it.
"""

import itertools
import logging
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from rosterdrop import storage
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.signals import upload_purged
from rosterdrop.inbox.store import inbox_dir, stored_file, upload_folder

log = logging.getLogger(__name__)

AUDIT_LOGIN = "retention"

Inode = tuple[int, int]


@dataclass
class Purged:
    """What retention deleted of one upload's bytes."""

    upload: Upload
    deleted: list[str] = field(default_factory=list)  # as storage.shown names them
    # Names the bytes still have after the deletions (0 = gone): another upload kept the same
    # bytes (`shared`), or a link outside the places rosterdrop makes them.
    links_left: int = 0
    shared: bool = False


def expired(now: datetime | None = None) -> QuerySet[Upload]:
    """Uploads whose bytes the retention setting says must go now."""
    days = settings.UPLOAD_RETENTION_DAYS
    if days <= 0:
        return Upload.objects.none()
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return (
        Upload.objects.filter(received_at__lt=cutoff, purged_at__isnull=True)
        .exclude(stored_path="")
        .exclude(status=Upload.Status.RECEIVED)
        .exclude(syncs__status__in=("held", "running"))
        .select_related("district")
    )


def purge(now: datetime | None = None) -> list[Purged]:
    """Delete every copy of the raw bytes of expired uploads; each deletion is audited. The
    uploads purged, with what went. (The files in the SFTP/FTPS folders that are not an
    upload's: intake's `folder.sweep_old`.)"""
    now = now or timezone.now()
    uploads = list(expired(now))
    links = _temporary_links(uploads) if uploads and storage.backend().local else {}
    purged = [_purge(upload, links, now) for upload in uploads]
    return purged


def discard(upload: Upload, login: str, ip: str | None) -> Purged:
    """Delete the bytes of an upload that will never be imported now, not at its expiry (the
    district deleted it from its shared folder before its import: intake.folder)."""
    return _purge(upload, {}, timezone.now(), login, ip)


def _purge(
    upload: Upload,
    links: dict[Inode, list[Path]],
    now: datetime,
    login: str = AUDIT_LOGIN,
    ip: str | None = None,
) -> Purged:
    done = Purged(upload)
    kept = storage.backend()
    if kept.local:
        _delete_links(upload, links, done)
    else:
        done.shared = (
            Upload.objects.filter(stored_path=upload.stored_path).exclude(pk=upload.pk).exists()
        )
        if not done.shared and kept.delete(upload.stored_path):
            done.deleted.append(kept.shown(upload.stored_path))
    upload.stored_path = ""
    upload.purged_at = now
    upload.save(update_fields=["stored_path", "purged_at"])
    upload_purged.send(sender=Upload, upload=upload)
    _audit(done, login, ip)
    return done


def _delete_links(upload: Upload, links: dict[Inode, list[Path]], done: Purged) -> None:
    """Delete the upload's file in the data folder and the links to it, counting what stays."""
    path = stored_file(upload)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = None
    if fd is not None:
        try:
            st = os.fstat(fd)
            _delete(path, done)
            done.shared = _kept_by_another_upload(upload, st)
            if not done.shared:  # else the links belong to that upload's imports
                for link in links.get((st.st_dev, st.st_ino), []):
                    _delete(link, done)
            # The open descriptor still counts the file's names after the deletions.
            done.links_left = os.fstat(fd).st_nlink
        finally:
            os.close(fd)


def _delete(path: Path, done: Purged) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    done.deleted.append(_shown(path))


def _kept_by_another_upload(upload: Upload, st: os.stat_result) -> bool:
    """Whether an upload not purged keeps the same bytes under its own name (same inode)."""
    same = Upload.objects.filter(district=upload.district_id, sha256=upload.sha256)
    for other in same.exclude(pk=upload.pk).exclude(stored_path=""):
        try:
            other_st = stored_file(other).stat()
        except FileNotFoundError:
            continue
        if (other_st.st_dev, other_st.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _temporary_links(uploads: list[Upload]) -> dict[Inode, list[Path]]:
    """Files that may be hard links to raw uploads, by inode: everything under `tmp/` (an
    import's work folder, `tmp/upload-*`, links the uploads it reads), half-received files
    in the inbox (`.incoming-*`, which may be a link to an earlier upload of the same bytes)
    and the files of the districts' SFTP/FTPS folders (an upload received there)."""
    work = settings.DATA_DIR / "tmp"
    districts = {u.district for u in uploads}
    candidates = itertools.chain(
        (Path(root) / name for root, _dirs, names in os.walk(work) for name in names),
        *(inbox_dir(d).glob(".incoming-*") for d in districts),
        *(upload_folder(d.slug).glob("*") for d in districts),
    )
    found: dict[Inode, list[Path]] = defaultdict(list)
    for path in candidates:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            found[(st.st_dev, st.st_ino)].append(path)
    return found


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(settings.DATA_DIR))
    except ValueError:
        return str(path)


def _audit(done: Purged, login: str, ip: str | None) -> None:
    upload = done.upload
    if done.shared:
        left = "the same bytes stay, kept by a later upload"
    elif done.links_left == 0:
        left = "no copy left"
    else:
        left = f"{done.links_left} link(s) outside rosterdrop's folders remain"
        log.warning("raw upload %s: %s", upload.pk, left)
    paths = ", ".join(done.deleted) or "nothing in storage"
    record(
        AuditEvent.Kind.RETENTION,
        login=login,
        ip=ip,
        detail=f"deleted raw upload {upload.pk} {upload.filename} of {upload.district.slug} "
        f"(sha256 {upload.sha256}): {paths}; {left}",
    )
