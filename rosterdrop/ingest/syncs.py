"""A sync's life: stored uploads imported as one sync, a held one approved or discarded, a
failed one retried; in the caller's thread (the worker, `rosterdrop import`, `rosterdrop sync`).

Each import resolves the district's settings once (engine.Settings: its format too), and
runs the engine with them; what it found is recorded (report.py), the district told (notify)
and the uploads settled (states.py); their SIS search index is built after, off the import's
path (signals.index_wanted, index_builds.py). A request starts the same off its thread
(jobs.py).
"""

import contextlib
import errno
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from rosterdrop import notify, process
from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import check_quota, fetch, receive
from rosterdrop.ingest import issue_rows, resent, states
from rosterdrop.ingest.claims import claim_uploads
from rosterdrop.ingest.engine import APPLIED, Settings, run, tmp_dir
from rosterdrop.ingest.findings import FATAL, Finding, FindingLog
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.outcome import Checked, Outcome
from rosterdrop.ingest.reader import Progress, expand, limits
from rosterdrop.ingest.report import record
from rosterdrop.ingest.signals import index_wanted

log = logging.getLogger(__name__)


def import_uploads(
    district: District,
    uploads: list[Upload],
    *,
    dry_run: bool = False,
    sync: Sync | None = None,
    approved: bool = False,
    progress: Progress | None = None,
) -> Sync:
    """Import stored uploads as one set (a zip, or loose files together) and record the sync.

    `sync`: one already running for them (started by states.start or claimed for approval).
    """
    if sync is None:
        sync = states.start(district, uploads, dry_run=dry_run)
    try:
        outcome = _import(district, uploads, sync, approved, dry_run, progress)
    except Exception as exc:
        # Nothing was applied (the transaction rolled back); say so rather than stay "running".
        log.exception("import of sync %s failed", sync.pk)
        outcome = _stopped(sync, exc)
    if outcome is None:  # the same files, read the same way, as an earlier sync
        return _finish(sync, uploads, "no_changes", sync.message, dry_run)
    if outcome.status in APPLIED and not dry_run:
        sync.refresh_from_db()
    else:
        record(sync, outcome)
    return _finish(sync, uploads, outcome.status, outcome.message, dry_run)


def _import(
    district: District,
    uploads: list[Upload],
    sync: Sync,
    approved: bool,
    dry_run: bool,
    progress: Progress | None,
) -> Outcome | None:
    """Run the engine over the uploads with the district's settings as they are now, read
    once: the digest that tells re-sent files, the vouching and every file's reading all
    use the same format. None when an earlier sync of the same input still holds."""
    settings = Settings.of(district)
    digest = resent.input_digest(settings.context(district.pk), uploads)
    Sync.objects.filter(pk=sync.pk).update(input_digest=digest)
    sync.input_digest = digest
    earlier = resent.earlier_sync(district, digest) if not approved else None
    if earlier is not None:
        resent.repeat(sync, earlier)
        issue_rows.repeat(sync, earlier, uploads)
        return None
    with fetched(uploads, "upload-") as paths:
        outcome = run(
            paths,
            district,
            sync,
            settings,
            approved=approved,
            dry_run=dry_run,
            progress=progress,
            digests=digests(uploads),
        )
        if not dry_run:
            issue_rows.keep(sync, uploads, paths, outcome.checked.log.all(), limits())
        return outcome


def digests(uploads: list[Upload]) -> dict[str, str]:
    """Each upload's sha256 by its name as sent: what `fetched` names its file (ingest/lines.py
    takes a file sent again as it was whole)."""
    return {upload.filename: upload.sha256 for upload in uploads}


@contextlib.contextmanager
def fetched(uploads: list[Upload], prefix: str) -> Iterator[list[Path]]:
    """The uploads' bytes in a work folder named for this process (`prefix`: what recovery
    finds of a dead one), each under its name as sent, which is what the format matches on;
    the folder is removed after."""
    work = process.mkdtemp(prefix, tmp_dir())
    try:
        paths = []
        for upload in uploads:
            target = work / upload.filename
            fetch(upload, target)
            paths.append(target)
        yield paths
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stopped(sync: Sync, exc: Exception) -> Outcome:
    """The outcome of an import that raised: a full disk says so and how to retry; anything
    else is an internal error (the details are in the server log)."""
    found = FindingLog()
    if disk_full(exc):
        found.add(
            Finding(
                FATAL,
                "disk_full",
                "The server's disk was full during this import, so it stopped; nothing was "
                "applied. Once the operator has freed space it can be imported again: "
                f"`rosterdrop sync retry {sync.pk}` (or Retry on the sync's page).",
            )
        )
        return Outcome(
            "failed", Checked(log=found), message="The disk was full; nothing was applied."
        )
    found.add(
        Finding(
            FATAL,
            "internal_error",
            "rosterdrop could not finish this import because of an internal error; nothing "
            "was applied. The operator has the details in the server log.",
        )
    )
    return Outcome("failed", Checked(log=found), message="Internal error; nothing was applied.")


def disk_full(exc: BaseException | None) -> bool:
    """Whether an error, or one it came from, is a full disk (or quota), as the OS, SQLite,
    Arrow or polars report it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "database or disk is full" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _finish(sync: Sync, uploads: list[Upload], status: str, message: str, dry_run: bool) -> Sync:
    """Tell whoever is notified, mark the uploads imported or failed, and ask for their SIS
    search index (built after, off the import's path: ingest.index_builds)."""
    if not dry_run:
        notify.sync_finished(sync)
        states.settle(uploads, states.upload_outcome(status), message)
        index_wanted.send(sender=Sync, sync=sync)
    return sync


def import_path(
    district: District,
    path: Path,
    *,
    dry_run: bool = False,
    login: str = "",
    progress: Progress | None = None,
) -> Sync | None:
    """`rosterdrop import PATH`: keep the files in the inbox like any upload, then import
    those the format claims, as SFTP and the web page do. None when it claims none: each
    is then recorded as unmatched, with the reason."""
    uploads = claimed(district, receive_path(district, path, login), dry_run)
    if not uploads:
        return None
    return import_uploads(district, uploads, dry_run=dry_run, progress=progress)


def receive_path(district: District, path: Path, login: str = "") -> list[Upload]:
    """The files of a path (a zip, a folder, a file) kept in the inbox like any upload; none
    if they do not fit the district's quota (store.QuotaExceeded)."""
    files = expand(path)
    check_quota(district, sum(p.stat().st_size for p in files))
    return [receive(district, p.name, p, "cli", login=login) for p in files]


def claimed(district: District, uploads: list[Upload], dry_run: bool = False) -> list[Upload]:
    """The uploads the district's format claims (`ingest/claims.py`); the others are recorded
    as unmatched and, unless this is a dry run, mailed."""
    try:
        return claim_uploads(district, uploads, tell=not dry_run).importable
    except ValueError:
        return uploads  # a format that does not exist: the import says so


def approve(sync: Sync, who: str = "") -> Sync:
    """Apply a held sync against the roster as it is now, past the removal guard.

    Raises states.Conflict if it is no longer held (decided by someone else first).
    """
    states.claim_approval(sync, who)
    return apply_approved(sync)


def apply_approved(sync: Sync) -> Sync:
    """Run an approval claimed with states.claim_approval. The held sync's issues and
    changes are replaced only when its new outcome is recorded: an approval cut short by a
    crash returns to held with them (ingest.recovery)."""
    return import_uploads(sync.district, list(sync.uploads.all()), sync=sync, approved=True)


def discard(sync: Sync, who: str = "") -> Sync:
    """Raises states.Conflict if it is no longer held."""
    states.move(sync, Sync.Status.DISCARDED, decided_by=who)
    return sync


def start_retry(sync: Sync) -> Sync:
    """A new running sync that imports the uploads of a failed or interrupted one again
    (a full disk, a crash); raises states.IllegalMove if that cannot be."""
    if sync.status not in states.RETRYABLE or sync.dry_run:
        raise states.IllegalMove(
            f"sync {sync.pk} is {sync.status}; only a failed or interrupted import is retried"
        )
    uploads = list(sync.uploads.all())
    purged = [u.filename for u in uploads if not u.stored_path]
    if not uploads or purged:
        raise states.IllegalMove(
            f"the files of sync {sync.pk} are no longer kept ({', '.join(purged)}); send them again"
        )
    return states.start(sync.district, uploads, retry_of=sync)


def retry(sync: Sync) -> Sync:
    """Import a failed or interrupted sync's uploads again, as a new sync."""
    again = start_retry(sync)
    return import_uploads(again.district, list(again.uploads.all()), sync=again)
