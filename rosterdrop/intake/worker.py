"""The in-process import worker: turns waiting uploads into syncs.

The state lives in the Upload rows (status "received" = waiting), so a restart or a crash loses
nothing: whatever is still waiting is picked up again, and ingest.recovery settles what a
crash left running. A .zip is imported on its own at once;
loose files of a district are imported together once its quiet period has passed with no new
loose file (or at once when someone asked to import them now); nothing of a paused district
is imported until its pause ends, then everything in the order it came; a file the
district's format does not claim is recorded as unmatched, as on every other path
(`ingest/claims.py`). Between passes it builds the SIS search index of the syncs that want one,
a sync at a time (`ingest/index_builds.py`): imports ready meanwhile go first.
"""

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from rosterdrop.districts.models import District
from rosterdrop.formats import get_format
from rosterdrop.inbox import retention
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import index_builds, recovery, states
from rosterdrop.ingest.claims import claim_uploads
from rosterdrop.ingest.models import Sync, SyncStatus
from rosterdrop.intake import folder

log = logging.getLogger(__name__)
RETENTION_EVERY_SECONDS = 3600
RECOVERY_EVERY_SECONDS = 60

_wake = threading.Event()


def wake() -> None:
    """Called after each upload so the worker need not wait for its next poll."""
    _wake.set()


def waiting_uploads(district: District | None = None) -> dict[District, list[Upload]]:
    """The uploads waiting for the worker, by district; one a running sync holds is being
    imported (by another process, or left by a dead one for recovery) and is not waiting."""
    uploads = (
        Upload.objects.filter(
            status=Upload.Status.RECEIVED,
            source__in=settings.WORKER_SOURCES,
            district__paused=False,
        )
        .exclude(syncs__status=SyncStatus.RUNNING)
        .select_related("district")
        .order_by("id")
    )
    if district is not None:
        uploads = uploads.filter(district=district)
    by_district: dict[District, list[Upload]] = defaultdict(list)
    for upload in uploads:
        by_district[upload.district].append(upload)
    return by_district


def run_once(now: datetime | None = None) -> float | None:
    """Import what is ready; return seconds until the next quiet period ends, if any waits."""
    now = now or timezone.now()
    waits = [run_district(d, uploads, now) for d, uploads in waiting_uploads().items()]
    return min((w for w in waits if w is not None), default=None)


def run_district(district: District, uploads: list[Upload], now: datetime) -> float | None:
    """Import what of one district's waiting uploads is ready: each package at once, the loose
    files once their quiet period has passed; seconds until it has, if loose files wait."""
    if district.paused_at(now):  # a scheduled pause: they wait, in order, until it ends
        return None
    try:
        claimed = claim_uploads(district, uploads)
    except ValueError as exc:
        _finish(uploads, Upload.Status.FAILED, str(exc))
        return None
    for package in claimed.packages:
        import_set(district, [package])
    loose = claimed.loose
    if not loose:
        return None
    wait = _quiet_for(district, loose, now)
    if wait is None:
        import_set(district, latest_per_name(loose))
    return wait


def ready(district: District, uploads: list[Upload], now: datetime) -> bool:
    """Whether run_district would do anything with these uploads now (it changes nothing:
    the format is asked, no file is claimed)."""
    if district.paused_at(now):
        return False
    try:
        spec = get_format(district.format, district.slug)
    except ValueError:  # run_district fails them
        return True
    claims = [spec.claim(u.filename) for u in uploads]
    if any(c.package or not c.mine for c in claims):  # a package, or a file to record unmatched
        return True
    return _quiet_for(district, uploads, now) is None


def _quiet_for(district: District, loose: list[Upload], now: datetime) -> float | None:
    """Seconds until the district's loose files are due (its quiet period after the last of
    them), or None once they are (or someone asked to import them now)."""
    last = max(u.received_at for u in loose)
    due = last + timedelta(seconds=district.quiet_period_seconds)
    asked = district.import_requested_at  # "Import now" after the last of them came
    if now >= due or (asked is not None and asked >= last):
        return None
    return (due - now).total_seconds()


def latest_per_name(uploads: list[Upload]) -> list[Upload]:
    """A file sent twice before the import: the newer one wins, the older is marked replaced."""
    latest: dict[str, Upload] = {}
    for upload in sorted(uploads, key=lambda u: u.pk):
        older = latest.get(upload.filename)
        if older is not None:
            _finish(
                [older],
                Upload.Status.EXPIRED,
                f"Replaced by a newer {upload.filename} (upload {upload.pk}) before it was "
                "imported.",
            )
        latest[upload.filename] = upload
    return sorted(latest.values(), key=lambda u: u.pk)


def import_set(district: District, uploads: list[Upload]) -> Sync | None:

    # The pipeline (polars, Arrow, the stores) loads at the first import, not at start: an
    # idle `serve` and the SFTP worker processes (which import this module) never need it.
    from rosterdrop.ingest import syncs

    names = ", ".join(u.filename for u in uploads)
    log.info("importing %s for %s", names, district.slug)
    try:
        sync = syncs.import_uploads(district, uploads)
    except Exception as exc:  # one bad import must not stop the worker
        log.exception("import of %s for %s failed", names, district.slug)
        _finish(uploads, Upload.Status.FAILED, f"The import stopped with an error: {exc}")
        return None
    # The pipeline sets each upload's status; never leave one waiting (it would loop).
    _finish(uploads, states.upload_outcome(sync.status), f"Sync {sync.pk}: {sync.status}.")
    return sync


def _finish(uploads: list[Upload], status: str, outcome: str) -> None:
    states.settle(uploads, status, outcome, waiting_only=True)


def apply_retention(now: datetime | None = None) -> int:
    """Delete every copy of expired raw uploads (`inbox/retention.py`) and the files that old
    in the SFTP/FTPS folders; how many uploads."""
    now = now or timezone.now()
    purged = retention.purge(now)
    folder.sweep_old(now)
    return len(purged)


def build_index() -> bool:
    """Build the SIS search index of one sync that wants one (the newest); whether one was
    built (then more may want one: the next pass comes at once, after the imports ready)."""
    try:
        return bool(index_builds.build(one=True))
    except Exception:  # the database, not the build (that is logged and never raises)
        log.exception("search index pass failed")
        return False
    finally:
        close_old_connections()


def run_forever(stop: threading.Event) -> None:
    """The worker thread of `rosterdrop serve`: recovers what a crash left (at start, then
    now and then for a `rosterdrop import` that died meanwhile), then imports, then builds
    an index that is wanted."""
    last_retention, last_recovery = 0.0, -float("inf")
    while not stop.is_set():
        next_due = None
        if time.monotonic() - last_recovery > RECOVERY_EVERY_SECONDS:
            last_recovery = time.monotonic()
            try:
                recovery.recover()
            except Exception:
                log.exception("recovery failed")
        try:
            next_due = run_once()
            if time.monotonic() - last_retention > RETENTION_EVERY_SECONDS:
                apply_retention()
                last_retention = time.monotonic()
        except Exception:
            log.exception("worker pass failed")
        finally:
            close_old_connections()
        if not stop.is_set() and build_index():
            next_due = 0.0
        timeout = settings.WORKER_POLL_SECONDS
        if next_due is not None:
            timeout = max(0.05, min(timeout, next_due))
        _wake.wait(timeout)
        _wake.clear()
