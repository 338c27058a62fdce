"""What is built after a sync, off the import's path: the SIS search index of its uploads
(ingest.sent_index), the lines its read did not keep (line_builds.py), and the roster's
reference indexes a first import left out (on PostgreSQL built concurrently, with every other
index of a table it took but its unique key) with the gaps they count (roster/store.py
lookups_built_after, finish_load).

The search index was built inside every import, after the apply: at `huge` ~17 s of CPU on
SQLite and ~57 s on PostgreSQL (writing ~400 MB), for a first import and again on every night
that sends a changed enrollments.csv. Now a sync's outcome is recorded and told without it,
and the index is built after, in the background: on PostgreSQL by a queue job (intake/queue.py
`build_index`, deferred once the outcome is committed: `syncs` sends `signals.index_wanted`),
on SQLite by serve's worker thread between its imports (intake/worker.py). `rosterdrop import`
builds none: the next `serve` or `rosterdrop worker` does, or `rosterdrop search-index build`.
Until then the SIS page reads the file, and says the index is being built.

A sync's `index` says where its build is (models.IndexState; every move in states.py). A build
holds its district's lock (PostgreSQL: an advisory lock on its connection; SQLite: a file
lock, one build at a time), which ends with the process holding it: a sync found `building`
by someone holding the lock was left by a build that died (killed, out of memory). It is
built once more and, if that build dies too, given up (logged; the page reads the files)
rather than take down every start of the process with it. A build that fails is logged and
the sync marked built: it never fails or changes a sync. Retention may purge an upload while
its index is built: the build then forgets what it wrote of bytes no longer kept.
"""

import contextlib
import fcntl
import logging
from collections.abc import Iterator

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import jobs, states
from rosterdrop.ingest.models import IndexState, Sync
from rosterdrop.roster import wal
from rosterdrop.timing import timed

# The builds' modules (the pipeline: polars, Arrow, the stores) are imported by the functions
# that build, not here: the worker thread and the queue import this module to look for syncs
# that want a build, and a process that never builds one (an idle `serve`, SFTP worker
# processes) should not load them (~0.75 s of CPU at each start).

log = logging.getLogger(__name__)

# The first key of the advisory locks of index builds (the second: the district's id); not
# the imports' (ingest.jobs.LOCK_SPACE): a district's import and its index build run at once.
LOCK_SPACE = 0x52534958
UNBUILT = (IndexState.WANTED, IndexState.BUILDING, IndexState.AGAIN)
# What a build found under the lock -> what it moves the sync to before building.
NEXT: dict[str, str] = {
    IndexState.WANTED: IndexState.BUILDING,
    IndexState.BUILDING: IndexState.AGAIN,
}


def wanted(district: District | None = None) -> QuerySet[Sync]:
    """Syncs whose uploads' index is still to be built (or whose build died), newest first:
    those with an outcome, not dry runs, with an upload whose bytes are still kept."""
    kept = Upload.objects.filter(syncs=OuterRef("pk")).exclude(stored_path="")
    syncs = Sync.objects.filter(
        Exists(kept), dry_run=False, status__in=states.INDEXED, index__in=UNBUILT
    )
    if district is not None:
        syncs = syncs.filter(district=district)
    return syncs.select_related("district").order_by("-pk")


def building(upload: Upload) -> bool:
    """Whether the index of an upload's files is yet to be built (the SIS page says so)."""
    return wanted().filter(uploads=upload).exists()


def due_districts() -> set[int]:
    """Districts with an index to build now: a sync wanting one, or one whose build died
    (`building` while the district's lock is free)."""
    due: set[int] = set()
    found = wanted().order_by().values_list("district_id", "index").distinct()
    for district_id, state in sorted(found, key=lambda found: found[1] != IndexState.WANTED):
        if district_id in due:
            continue
        if state == IndexState.WANTED:
            due.add(district_id)
            continue
        with _lock(district_id) as held:
            if held:
                due.add(district_id)
    return due


def build(district: District | None = None, *, one: bool = False) -> list[int]:
    """Build the index of each sync that wants one (of `district`, or every district),
    newest first, each under its district's lock; `one`: the first only (the worker thread
    imports between builds). The syncs whose build ran: none that another process builds."""
    # The pages of the syncs before, left in SQLite's WAL by their commits (roster/wal.py).
    wal.now()
    done: list[int] = []
    for sync in wanted(district):
        with _lock(sync.district_id) as held:
            if not held:
                continue
            sync.refresh_from_db(fields=["index", "status"])  # as it is under the lock
            if sync.index not in UNBUILT or sync.status not in states.INDEXED:
                continue
            _build(sync)
            done.append(sync.pk)
        if one:
            break
    if district is not None and not done:
        _lookups_left(district)
    return done


def _lookups_left(district: District) -> None:
    """The reference indexes a first import left to after its sync, and the gaps they count,
    when no build after a sync ran: one whose sync wants none (no upload of it kept, its bytes
    purged meanwhile) would leave them missing until some later sync's build, every read by
    reference a scan of the table meanwhile. A district's build is asked for after each of its
    syncs (syncs._finish), so they are built after any sync. Never a reason to fail."""
    from rosterdrop.ingest import gaps
    from rosterdrop.roster import store

    try:
        with _lock(district.pk) as held:
            if not held:
                return
            store.build_missing_indexes()
            token = store.roster_token(district.pk)
            last = Sync.objects.filter(district=district, dry_run=False, roster_token=token)
            sync = last.order_by("-pk").first()
            if sync is not None:
                gaps.after_sync(district.pk, sync.pk, token)
    except Exception:  # readers are right without them, only slower
        log.exception("the reference indexes left in district %s were not built", district.pk)


def _build(sync: Sync) -> None:
    if sync.index == IndexState.AGAIN:  # a second build died too
        log.error(
            "the search index of sync %s is not built: its build stopped twice (the process "
            "died); the SIS page reads its files",
            sync.pk,
        )
        states.move_index(sync, IndexState.BUILT)
        return
    if not states.move_index(sync, NEXT[sync.index]):
        return
    try:
        _after(sync)
    except Exception:  # a shortcut for the page: never a reason to fail anything
        log.exception("the search index of sync %s was not built", sync.pk)
    states.move_index(sync, IndexState.BUILT)


def _after(sync: Sync) -> None:
    """What is built after the sync: the roster's reference indexes a first import left out
    and the gaps they count (`_lookups`), the lines of its files its read did not keep (for
    the next read, ingest/line_builds.py), then their SIS search index."""
    from rosterdrop.ingest import line_builds

    try:
        _lookups(sync)
    except Exception:  # readers are right without them, only slower; the next sync builds them
        log.exception("the reference indexes left after sync %s were not built", sync.pk)
    uploads = [u for u in sync.uploads.all() if u.stored_path]
    if uploads:  # line_builds.keep asks whether they are wanted
        try:
            line_builds.keep(sync, uploads)
        except Exception:  # a cache for the next read: never a reason to fail anything
            log.exception("the lines of sync %s were not kept", sync.pk)
    _index(sync, uploads)


def _lookups(sync: Sync) -> None:
    """The roster's indexes a first import left to after its sync, then the gaps that it
    could not count without its reference indexes (roster/store.py lookups_built_after)."""
    from rosterdrop.ingest import gaps
    from rosterdrop.roster import store

    store.build_missing_indexes()
    gaps.after_sync(sync.district_id, sync.pk, sync.roster_token)


@timed("search index")
def _index(sync: Sync, uploads: list[Upload]) -> None:
    """Index the sync's kept uploads but those whose bytes an index was built for already
    (re-sent files); forget what was written of bytes retention purged meanwhile."""
    from rosterdrop.ingest import sent_index, syncs
    from rosterdrop.ingest.engine import Settings
    from rosterdrop.ingest.reader import limits

    district = sync.district
    spec = Settings.of(district).format
    covered = set(
        Upload.objects.filter(
            district=district,
            sha256__in=[u.sha256 for u in uploads],
            syncs__index=IndexState.BUILT,
            syncs__dry_run=False,
        ).values_list("sha256", flat=True)
    )
    uploads = [u for u in uploads if u.sha256 not in covered]
    if spec is None or not uploads:
        return
    try:
        with syncs.fetched(uploads, "index-") as paths:  # named for recovery, were it to die
            sent_index.keep(district, uploads, paths, spec, limits())
    finally:
        # Purged after `forget` looked (it found no index yet): forgotten here, after ours.
        for purged in Upload.objects.filter(pk__in=[u.pk for u in uploads], stored_path=""):
            sent_index.forget(Upload, upload=purged)


@contextlib.contextmanager
def _lock(district_id: int) -> Iterator[bool]:
    """Hold the lock of the district's index builds, if free; it ends with this process.
    PostgreSQL: an advisory lock on this thread's connection. SQLite: one file lock for every
    district (one writer at a time in any case)."""
    if connection.vendor == "postgresql":
        with jobs.advisory_lock(LOCK_SPACE, district_id) as held:
            yield held
        return
    with (settings.DATA_DIR / "search-index.lock").open("a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = False
        else:
            held = True
        yield held  # a file lock ends when the file is closed
