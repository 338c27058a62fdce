"""The states of an upload and of a sync, and every move between them (one owner).

Like Canvas's SisBatch, the moves allowed are declared here and every status write goes
through `move` (a sync) or `settle` (uploads): a move not declared raises IllegalMove, and a
move another process made first (two approvals at once) raises Conflict, decided by the
database (a conditional UPDATE), never by what a caller read earlier.

A running sync names the process running it (`runner`, see rosterdrop/process.py), so that
recovery (ingest/recovery.py) can tell a sync whose process died from one still at work: on
this host by the process itself, on another by the sync's heartbeat, which the process
renews while it runs (`beat`).
"""

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from rosterdrop import process
from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload, UploadStatus
from rosterdrop.ingest.models import IndexState, Sync, SyncStatus

log = logging.getLogger(__name__)
# A running sync whose heartbeat is older than this was run by a process that is gone: on
# another host (a worker of the queue, its machine gone) only this tells, so it is short, and
# six beats long, so that a busy moment never looks like a death. A queue job also holds its
# district's advisory lock while it imports, so not even a wrong verdict imports it twice.
LEASE_SECONDS = 60
BEAT_SECONDS = 10


S, U = SyncStatus, UploadStatus
# What an import ends in (also an approval, and a dry run, which applies nothing).
OUTCOMES = frozenset({S.APPLIED, S.APPLIED_WITH_ERRORS, S.HELD, S.NO_CHANGES, S.FAILED})
SYNC_MOVES: dict[str, frozenset[str]] = {
    # Finished, or stopped by a crash (recovery); a dead approval goes back to held.
    S.RUNNING: OUTCOMES | {S.INTERRUPTED},
    # Approved (claimed, then run) or discarded.
    S.HELD: frozenset({S.RUNNING, S.DISCARDED}),
    # A failed or interrupted sync is retried as a new sync; these never move again.
    S.APPLIED: frozenset(),
    S.APPLIED_WITH_ERRORS: frozenset(),
    S.NO_CHANGES: frozenset(),
    S.FAILED: frozenset(),
    S.DISCARDED: frozenset(),
    S.INTERRUPTED: frozenset(),
}
# What the last sync of an upload made of it.
FINISHED_UPLOAD = frozenset({U.IMPORTED, U.FAILED})
UPLOAD_MOVES: dict[str, frozenset[str]] = {
    U.RECEIVED: frozenset({U.IMPORTED, U.FAILED, U.UNMATCHED, U.EXPIRED}),
    # A later sync of the same upload (an approval, a retry) says how it ended now.
    U.IMPORTED: FINISHED_UPLOAD,
    U.FAILED: FINISHED_UPLOAD,
    U.UNMATCHED: frozenset(),
    U.EXPIRED: frozenset(),
}
RETRYABLE = frozenset({S.FAILED, S.INTERRUPTED})
# A sync whose uploads' SIS search index is built (ingest.index_builds): one with an outcome,
# or discarded (its files are shown until retention), never a dry run.
INDEXED = OUTCOMES | {S.DISCARDED}
INDEX_MOVES: dict[str, frozenset[str]] = {
    IndexState.WANTED: frozenset({IndexState.BUILDING}),
    # Built (or tried: a failure is logged), or found left by a build that died: again.
    IndexState.BUILDING: frozenset({IndexState.BUILT, IndexState.AGAIN}),
    IndexState.AGAIN: frozenset({IndexState.BUILT}),  # built, or given up: that one died too
    IndexState.BUILT: frozenset(),
}


class IllegalMove(Exception):
    """A move the state machine does not allow (a bug in the caller)."""


class Conflict(Exception):
    """The sync is no longer in the state the move starts from: someone else moved it."""


def check(current: str, to: str) -> None:
    if to not in SYNC_MOVES[current]:
        raise IllegalMove(f"a sync cannot go from {current} to {to}")


def start(district: District, uploads: Iterable[Upload], **fields: Any) -> Sync:
    """A new running sync of `uploads`, owned by this process: one transaction, so that a
    running sync always has its uploads."""
    with transaction.atomic():
        sync = Sync.objects.create(district=district, status=S.RUNNING, **_owned(), **fields)
        sync.uploads.set(list(uploads))
    return sync


def _owned() -> dict[str, Any]:
    """The fields of a sync this process starts running, its heartbeat kept from now on (on
    PostgreSQL: on SQLite every process is on this host, where `is_dead` asks the process
    itself, and a beat would only queue behind an import's write lock and fail)."""
    if connection.vendor != "sqlite":
        _beating()
    return {"runner": str(process.me()), "heartbeat_at": timezone.now()}


@dataclass(frozen=True)
class _Heartbeat:
    """This process's heartbeat thread and what stops it (a forked child starts its own)."""

    pid: int
    thread: threading.Thread
    stop: threading.Event


_heartbeat_lock = threading.Lock()
_heartbeat: _Heartbeat | None = None


def _beating() -> None:
    global _heartbeat
    pid = process.me().pid
    with _heartbeat_lock:
        if _heartbeat is None or _heartbeat.pid != pid:
            stop = threading.Event()
            thread = threading.Thread(
                target=_beat_until, args=(stop,), name="sync-heartbeat", daemon=True
            )
            thread.start()
            _heartbeat = _Heartbeat(pid, thread, stop)


def stop_beating() -> None:
    """Stop this process's heartbeat thread and wait for it, before its database goes away
    (a test's), where its next beat would fail. The next sync this process starts starts it
    again."""
    global _heartbeat
    with _heartbeat_lock:
        heartbeat, _heartbeat = _heartbeat, None
    if heartbeat is not None and heartbeat.pid == process.me().pid:
        heartbeat.stop.set()
        heartbeat.thread.join()


def _beat_until(stop: threading.Event) -> None:
    while not stop.wait(BEAT_SECONDS):
        try:
            beat()
        except Exception:  # a busy database: the next beat comes well within the lease
            log.warning("sync heartbeat failed", exc_info=True)
        finally:
            connection.close()  # this thread's own


def beat() -> int:
    """Renew the heartbeat of the syncs this process runs; how many."""
    mine = Sync.objects.filter(status=S.RUNNING, runner=str(process.me()))
    if not mine.exists():  # a read: no write lock asked for when nothing runs
        return 0
    return mine.update(heartbeat_at=timezone.now())


def take(sync: Sync, handed_by: str) -> bool:
    """Take over a running sync that the process `handed_by` started and queued (a worker
    running a front end's import); False if it is no longer running or no longer that
    process's (taken already, or recovered)."""
    owned = _owned()
    taken = Sync.objects.filter(pk=sync.pk, status=S.RUNNING, runner=handed_by).update(**owned)
    if taken:
        sync.runner, sync.heartbeat_at = owned["runner"], owned["heartbeat_at"]
    return bool(taken)


def is_dead(sync: Sync) -> bool:
    """Whether the process running `sync` is gone: one on this host by its pid and start
    time, one on another by a heartbeat older than the lease; a sync that names no process
    was started before processes were named."""
    runner = process.parse(sync.runner)
    if runner is None:
        return True
    if runner.host == process.me().host:
        return not runner.alive
    beat = sync.heartbeat_at or sync.started_at
    return bool(beat < timezone.now() - timedelta(seconds=LEASE_SECONDS))


def move(sync: Sync, to: str, **fields: Any) -> None:
    """Move `sync` (as read) to `to`, with other fields written in the same UPDATE.

    A sync leaving `running` gets its finish time unless told one.
    """
    check(sync.status, to)
    if sync.status == S.RUNNING and to != S.RUNNING:
        fields.setdefault("finished_at", timezone.now())
    moved = type(sync).objects.filter(pk=sync.pk, status=sync.status).update(status=to, **fields)
    if not moved:
        raise Conflict(f"sync {sync.pk} is no longer {sync.status}")
    sync.status = to
    for name, value in fields.items():
        setattr(sync, name, value)


def move_index(sync: Sync, to: str) -> bool:
    """Move the index state of `sync` (as read) to `to`; False if another process moved it
    first."""
    if to not in INDEX_MOVES[sync.index]:
        raise IllegalMove(f"a sync's index cannot go from {sync.index} to {to}")
    moved = type(sync).objects.filter(pk=sync.pk, index=sync.index).update(index=to)
    if moved:
        sync.index = to
    return bool(moved)


def claim_approval(sync: Sync, who: str) -> None:
    """Take a held sync to apply it past the removal guard (raises Conflict if it is no
    longer held: a double click, or two operators). A running sync with `decided_by` set is an
    approval: if its process dies, recovery returns it to held."""
    move(sync, S.RUNNING, decided_by=who or "unknown", **_owned())


def settle(uploads: Iterable[Upload], to: str, outcome: str, *, waiting_only: bool = False) -> int:
    """Say how the import of these uploads ended. `waiting_only`: settle only those still
    waiting (an upload an import already settled keeps what that import said)."""
    ids = [u.pk for u in uploads]
    if to not in UPLOAD_MOVES[U.RECEIVED] | FINISHED_UPLOAD:
        raise IllegalMove(f"an upload cannot become {to}")
    sources: list[str]
    if waiting_only:
        sources = [U.RECEIVED]
    else:
        sources = [s for s, moves in UPLOAD_MOVES.items() if to in moves]
        stuck = Upload.objects.filter(pk__in=ids).exclude(status__in=sources)
        if stuck.exists():
            raise IllegalMove(f"uploads {[u.pk for u in stuck]} cannot become {to}")
    return Upload.objects.filter(pk__in=ids, status__in=sources).update(
        status=to, outcome=outcome[:1000]
    )


def upload_outcome(sync_status: str) -> str:
    """What a finished sync makes of its uploads."""
    return U.FAILED if sync_status in (S.FAILED, S.INTERRUPTED) else U.IMPORTED
