"""The in-process import worker: turns waiting uploads into syncs.

The state lives in the Upload rows (status "received" = waiting), so a restart or a crash loses
nothing: whatever is still waiting is picked up again, and ingest.recovery settles what a
crash left running. A .zip is imported on its own at once;
loose files of a district are imported together once its quiet period has passed with no new
loose file (or at once when someone asked to import them now); nothing of a paused district
is imported until its pause ends, then everything in the order it came; a file the
district's format does not claim is recorded as unmatched, as on every other path
(`ingest/claims.py`).
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
from rosterdrop.inbox import retention
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import pipeline, recovery, states
from rosterdrop.ingest.claims import claim_uploads
from rosterdrop.ingest.models import Sync
from rosterdrop.intake import folder

log = logging.getLogger(__name__)
RETENTION_EVERY_SECONDS = 3600
RECOVERY_EVERY_SECONDS = 60

_wake = threading.Event()


def wake() -> None:
    """Called after each upload so the worker need not wait for its next poll."""
    _wake.set()


def woken(sender, **kwargs) -> None:
    """`inbox.signals.upload_waiting`: an upload was stored."""
    wake()


def waiting_uploads() -> dict[District, list[Upload]]:
    uploads = (
        Upload.objects.filter(
            status=Upload.Status.RECEIVED,
            source__in=settings.WORKER_SOURCES,
            district__paused=False,
        )
        .select_related("district")
        .order_by("id")
    )
    by_district: dict[District, list[Upload]] = defaultdict(list)
    for upload in uploads:
        by_district[upload.district].append(upload)
    return by_district


def run_once(now: datetime | None = None) -> float | None:
    """Import what is ready; return seconds until the next quiet period ends, if any waits."""
    now = now or timezone.now()
    next_due: float | None = None
    for district, uploads in waiting_uploads().items():
        if district.paused_at(now):  # a scheduled pause: they wait, in order, until it ends
            continue
        try:
            claimed = claim_uploads(district, uploads)
        except ValueError as exc:
            _finish(uploads, Upload.Status.FAILED, str(exc))
            continue
        for package in claimed.packages:
            import_set(district, [package])
        loose = claimed.loose
        if not loose:
            continue
        last = max(u.received_at for u in loose)
        due = last + timedelta(seconds=district.quiet_period_seconds)
        asked = district.import_requested_at  # "Import now" after the last of them came
        if now >= due or (asked is not None and asked >= last):
            import_set(district, latest_per_name(loose))
        else:
            wait = (due - now).total_seconds()
            next_due = wait if next_due is None else min(next_due, wait)
    return next_due


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

    names = ", ".join(u.filename for u in uploads)
    log.info("importing %s for %s", names, district.slug)
    try:
        sync = pipeline.import_uploads(district, uploads)
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


def run_forever(stop: threading.Event) -> None:
    """The worker thread of `rosterdrop serve`: recovers what a crash left (at start, then
    now and then for a `rosterdrop import` that died meanwhile), then imports."""
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
        timeout = settings.WORKER_POLL_SECONDS
        if next_due is not None:
            timeout = max(0.05, min(timeout, next_due))
        _wake.wait(timeout)
        _wake.clear()
