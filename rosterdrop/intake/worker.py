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

A pass looks only at the districts that need it (`Passes`): those an upload, "Import now" or a
lifted pause woke (`wake(district_id)`), and those whose quiet period has ended. Every
WORKER_POLL_SECONDS one query over all waiting uploads (`sweep`) finds what came without a
wake-up (another process, a sync recovered, a district unpaused or its quiet period changed):
a district whose waiting uploads and settings are what they were at its last look is skipped,
and every district is looked at again after each recovery (RECOVERY_EVERY_SECONDS; a scheduled
pause that ended). So a burst of uploads to many districts costs each wake-up its own district,
not a pass over all of them; what the worker remembers is only where to look first: the
database stays the truth.
"""

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections
from django.db.models import QuerySet
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
_woken: set[int] = set()  # districts woken since the worker last took them
_woken_lock = threading.Lock()


def wake(district_id: int | None = None) -> None:
    """Called after each upload (with its district), "Import now" or a lifted pause, so the
    worker need not wait for its next poll; without a district, a pass for the index builds
    (or to see `stop`)."""
    if district_id is not None:
        with _woken_lock:
            _woken.add(district_id)
    _wake.set()


def _take_woken() -> set[int]:
    with _woken_lock:
        taken = set(_woken)
        _woken.clear()
    return taken


def _waiting() -> QuerySet[Upload]:
    """Uploads waiting for the worker; one a running sync holds is being imported (by another
    process, or left by a dead one for recovery) and is not waiting."""
    return (
        Upload.objects.filter(
            status=Upload.Status.RECEIVED,
            source__in=settings.WORKER_SOURCES,
            district__paused=False,
        )
        .exclude(syncs__status=SyncStatus.RUNNING)
        .order_by("id")
    )


def waiting_uploads(
    district: District | None = None, district_ids: set[int] | None = None
) -> dict[District, list[Upload]]:
    """The uploads waiting for the worker, by district (of one district, or of these)."""
    uploads = _waiting().select_related("district")
    if district is not None:
        uploads = uploads.filter(district=district)
    if district_ids is not None:
        uploads = uploads.filter(district_id__in=sorted(district_ids))
    by_district: dict[District, list[Upload]] = defaultdict(list)
    for upload in uploads:
        by_district[upload.district].append(upload)
    return by_district


def run_once(now: datetime | None = None) -> float | None:
    """Import what is ready of every district; return seconds until the next quiet period
    ends, if any waits. One pass of the worker thread's own kind (`Passes`), over every
    waiting district."""
    return Passes().run(now or timezone.now(), everything=True)


# What a district had waiting at its last look: its uploads, and the settings that decide
# when they are due. The same at the next sweep, and not due: nothing to look at.
_Seen = tuple[tuple[int, ...], int, datetime | None]


class Passes:
    """The worker thread's passes: each looks at the districts woken since the last, those
    whose quiet period has ended, and at a sweep those whose waiting uploads or settings
    changed since their last look (or all of them, `everything`)."""

    def __init__(self) -> None:
        self.seen: dict[int, _Seen] = {}
        self.due: dict[int, datetime] = {}  # when a district's loose files are due
        self.looked = 0  # districts looked at, all passes together (the tests count them)

    def run(self, now: datetime, sweep: bool = False, everything: bool = False) -> float | None:
        """Import what is ready of the districts to look at; seconds until the next quiet
        period this worker knows of ends, if any."""
        look = _take_woken() | {d for d, when in self.due.items() if when <= now}
        if sweep or everything:
            look |= self.sweep(everything)
        if look:
            try:
                self.look_at(look, now)
            except Exception:  # the database: look at them again at the next pass
                with _woken_lock:
                    _woken.update(look)
                raise
        if not self.due:
            return None
        return max(0.0, (min(self.due.values()) - now).total_seconds())

    def sweep(self, everything: bool) -> set[int]:
        """One query over every waiting upload: the districts whose waiting uploads or
        settings are not what they were at their last look (all, with `everything`)."""
        rows = _waiting().values_list(
            "district_id", "id", "district__quiet_period_seconds", "district__import_requested_at"
        )
        ids: dict[int, list[int]] = defaultdict(list)
        settings_of: dict[int, tuple[int, datetime | None]] = {}
        for district_id, upload_id, quiet, asked in rows:
            ids[district_id].append(upload_id)
            settings_of[district_id] = (quiet, asked)
        for gone in self.seen.keys() - ids.keys():  # nothing of it waits any more
            self.forget(gone)
        if everything:
            return set(ids)
        return {
            district_id
            for district_id, upload_ids in ids.items()
            if self.seen.get(district_id) != (tuple(upload_ids), *settings_of[district_id])
        }

    def look_at(self, district_ids: set[int], now: datetime) -> None:
        waiting = waiting_uploads(district_ids=district_ids)
        for district_id in district_ids - {d.pk for d in waiting}:
            self.forget(district_id)
        for district, uploads in waiting.items():
            self.looked += 1
            key = district.pk
            seen = (
                tuple(u.pk for u in uploads),
                district.quiet_period_seconds,
                district.import_requested_at,
            )
            wait = run_district(district, uploads, now)
            self.seen[key] = seen  # once looked at: a failed look is looked at again
            if wait is None:
                self.due.pop(key, None)
            else:
                self.due[key] = now + timedelta(seconds=wait)

    def forget(self, district_id: int) -> None:
        self.seen.pop(district_id, None)
        self.due.pop(district_id, None)


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
    an index that is wanted. Each pass looks at the districts `Passes` names; every
    WORKER_POLL_SECONDS a sweep, and after each recovery every waiting district."""
    passes = Passes()
    last_retention, last_recovery, last_sweep = 0.0, -float("inf"), -float("inf")
    while not stop.is_set():
        next_due = None
        everything = time.monotonic() - last_recovery > RECOVERY_EVERY_SECONDS
        if everything:
            last_recovery = time.monotonic()
            try:
                recovery.recover()
            except Exception:
                log.exception("recovery failed")
        sweep = time.monotonic() - last_sweep >= settings.WORKER_POLL_SECONDS
        if sweep:
            last_sweep = time.monotonic()
        try:
            next_due = passes.run(timezone.now(), sweep, everything)
            if time.monotonic() - last_retention > RETENTION_EVERY_SECONDS:
                apply_retention()
                last_retention = time.monotonic()
        except Exception:
            log.exception("worker pass failed")
        finally:
            close_old_connections()
        if not stop.is_set() and build_index():
            next_due = 0.0
        timeout = last_sweep + settings.WORKER_POLL_SECONDS - time.monotonic()
        if next_due is not None:
            timeout = min(timeout, next_due)
        timeout = max(0.05, timeout)
        _wake.wait(timeout)
        _wake.clear()
