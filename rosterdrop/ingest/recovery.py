"""Recovery: every state a crash (kill -9, power loss, OOM) can leave behind, settled.

Run when `rosterdrop serve` starts its worker (and every minute after, for a `rosterdrop
import` that died meanwhile), and by `rosterdrop recover`; on PostgreSQL by the job queue
instead, one district at a time under its lock (`recover(district)`, intake/queue.py). Only
what a dead process left is touched (states.is_dead: by pid and start time on this host, by
the sync's heartbeat on another), so it is safe beside a live web process, worker or import:

- a sync left `running` by a dead import is marked `interrupted` (its apply transaction
  never committed: nothing was applied) and its uploads are imported again once, as a new
  sync, whatever their source (SFTP, FTPS, web, CLI); if that import is interrupted too, its
  uploads are marked failed and wait for `rosterdrop sync retry`;
- a held sync whose approval died returns to `held`, its issues and changes intact;
- uploads whose sync finished just before the crash get that sync's outcome;
- web and CLI uploads whose import never began (the process stopped between receiving them
  and starting their sync) are marked failed, saying to send them again: a set cut short
  is not imported in part (SFTP and FTPS uploads simply wait for the worker);
- temporary files of dead processes (import folders, upload links, staged roster snapshots,
  files being received) are deleted, and their unfinished multipart uploads to S3 aborted.
"""

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from rosterdrop import process, storage
from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import states
from rosterdrop.ingest.models import Sync, SyncStatus

log = logging.getLogger(__name__)

# A temporary file of an older version (no process in its name) is deleted once this old.
UNNAMED_STALE_SECONDS = 24 * 3600
# A web or CLI upload starts its sync within seconds of being received; one still without a
# sync this long after was received by a process that stopped.
NEVER_STARTED_SECONDS = 3600


@dataclass
class Recovered:
    interrupted: list[int] = field(default_factory=list)  # syncs
    reimported: list[int] = field(default_factory=list)  # their new syncs
    held_again: list[int] = field(default_factory=list)
    settled_uploads: int = 0
    never_started: int = 0  # web and CLI uploads
    removed: list[Path] = field(default_factory=list)


def recover(district: District | None = None) -> Recovered:
    """Everything a crash left; or, given a `district` (a queue job holding its lock, so that
    no other recovery imports it at once), only that district's syncs and uploads."""
    done = Recovered()
    running = Sync.objects.filter(status=SyncStatus.RUNNING).select_related("retry_of")
    if district is not None:
        running = running.filter(district=district)
    for sync in running:
        if not states.is_dead(sync):
            continue
        try:
            _recover(sync, done)
        except states.Conflict:  # another recovery (a second process starting) took it
            continue
    if district is None:
        left = tidy()
        done.removed, done.settled_uploads = left.removed, left.settled_uploads
        done.never_started = left.never_started
    else:
        done.settled_uploads = _settle_finished(district)
    if done != Recovered():
        log.warning("recovered after a crash: %s", done)
    return done


def tidy() -> Recovered:
    """What a crash left outside any sync that is still running: temporary files, uploads
    whose sync finished unsaid, web and CLI uploads whose import never began."""
    return Recovered(
        removed=sweep(),
        settled_uploads=_settle_finished(),
        never_started=_fail_never_started(),
    )


def _recover(sync: Sync, done: Recovered) -> None:

    if sync.decided_by and not sync.dry_run:
        states.move(
            sync,
            SyncStatus.HELD,
            decided_by="",
            runner="",
            finished_at=sync.finished_at,
            message=(
                f"The approval by {sync.decided_by} was interrupted (the server stopped) "
                "before it was applied; nothing was applied and it is held again: approve it "
                f"again. {sync.message}"
            ),
        )
        done.held_again.append(sync.pk)
        return
    stopped = "It was interrupted (the process importing it stopped); nothing was applied."
    uploads = list(sync.uploads.all())
    second = sync.retry_of is not None and sync.retry_of.status == SyncStatus.INTERRUPTED
    if sync.dry_run or second or not uploads or any(not u.stored_path for u in uploads):
        how = f" Import it again with `rosterdrop sync retry {sync.pk}`." if uploads else ""
        states.move(sync, SyncStatus.INTERRUPTED, message=stopped + how)
        done.interrupted.append(sync.pk)
        if not sync.dry_run:
            states.settle(uploads, Upload.Status.FAILED, stopped + how)
        return
    again = states.start(sync.district, uploads, retry_of=sync)
    states.move(
        sync, SyncStatus.INTERRUPTED, message=f"{stopped} Imported again as sync {again.pk}."
    )
    done.interrupted.append(sync.pk)
    done.reimported.append(again.pk)
    from rosterdrop.ingest import syncs  # the pipeline, only when there is one to import

    syncs.import_uploads(sync.district, uploads, sync=again)


def _settle_finished(district: District | None = None) -> int:
    """Uploads still waiting although a sync of them finished (a crash between the two)."""
    waiting = Upload.objects.filter(status=Upload.Status.RECEIVED, syncs__isnull=False)
    if district is not None:
        waiting = waiting.filter(district=district)
    settled = 0
    for upload in waiting.distinct():
        done = (
            upload.syncs.filter(dry_run=False, status__in=states.OUTCOMES).order_by("-id").first()
        )
        if done is not None:
            outcome = states.upload_outcome(done.status)
            settled += states.settle(
                [upload], outcome, f"Sync {done.pk}: {done.status}.", waiting_only=True
            )
    return settled


def _fail_never_started() -> int:

    cutoff = timezone.now() - timedelta(seconds=NEVER_STARTED_SECONDS)
    stranded = Upload.objects.filter(
        status=Upload.Status.RECEIVED,
        source__in=(Upload.Source.WEB, Upload.Source.CLI),
        syncs__isnull=True,
        received_at__lt=cutoff,
    )
    return states.settle(
        list(stranded),
        Upload.Status.FAILED,
        "The server stopped after receiving this file and before its import began; nothing "
        "was imported. Send the files again.",
        waiting_only=True,
    )


def _temporary_places() -> list[Path]:
    """The folders where imports and transfers keep temporary files and folders."""
    data = settings.DATA_DIR
    places = [data / "tmp", data / "roster"]
    for parent in (data / "inbox", data / "sftp-tmp"):
        if parent.is_dir():
            places += [p for p in parent.iterdir() if p.is_dir()]
    return places


def _is_temporary(path: Path) -> bool:
    """Named by a dead process, or by an old version and stale; never anything else (the
    roster folder also holds the published snapshots, the inbox the uploads)."""
    if process.parse(path.name) is not None:
        return process.left_by_dead(path.name)
    unnamed = (
        path.parent.name == "tmp"
        or path.suffix == ".tmp"
        or path.name.startswith((".incoming-", ".upload-"))
    )
    with contextlib.suppress(FileNotFoundError):
        return unnamed and path.lstat().st_mtime < time.time() - UNNAMED_STALE_SECONDS
    return False


def sweep() -> list[Path]:
    """Delete the temporary files and folders of dead processes, and abort the uploads to S3
    they left unfinished; the paths deleted."""
    storage.backend().abort_dead()
    removed = []
    for place in _temporary_places():
        for path in place.iterdir() if place.is_dir() else ():
            if not _is_temporary(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
