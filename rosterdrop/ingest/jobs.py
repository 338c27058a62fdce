"""Sync jobs a request starts, the console's and the API's alike: an import, the decision on a
held sync, a retry. What may be decided, and the audit record of it, are here once; the
pipeline runs off the request thread (syncs.py).

The request creates or claims the sync (status "running") and returns at once; the sync page
polls until the job has recorded the outcome. On PostgreSQL the job goes to the queue
(`run_sync`, procrastinate), so that the workers run it and a front end (`serve --no-worker`)
never imports; it shares the district's lock with the queue's import jobs, so a district's
imports never overlap. On SQLite it runs in a thread of the web process.
"""

import contextlib
import logging
import threading
from collections.abc import Iterator
from enum import StrEnum

from django.conf import settings
from django.db import connection
from procrastinate import JobContext
from procrastinate.contrib.django import app

from rosterdrop import notify
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import states
from rosterdrop.ingest.models import Sync

log = logging.getLogger(__name__)

QUEUE = "imports"  # the queue the workers take imports from
RUN_SYNC_TASK = "rosterdrop.run_sync"


def lock_name(district_id: int) -> str:
    """The procrastinate lock of a district's jobs: they run one after another."""
    return f"district:{district_id}"


# The queue jobs this process runs now, for a stopping worker to hand back (intake.queue).
running: set[int] = set()
# The advisory lock's first key: rosterdrop's districts (the second is the district's id).
LOCK_SPACE = 0x524F5354
# A job that found its district's lock taken is queued again this much later.
AGAIN_SECONDS = 5


@contextlib.contextmanager
def advisory_lock(space: int, key: int) -> Iterator[bool]:
    """Hold a PostgreSQL advisory lock on this thread's connection, if free (whether it is):
    it ends with the connection, so a dead worker's is let go."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [space, key])
        (held,) = cursor.fetchone()
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [space, key])


def district_lock(district_id: int) -> contextlib.AbstractContextManager[bool]:
    """The district's import lock: every queue job holds it while it imports."""
    return advisory_lock(LOCK_SPACE, district_id)


class Decision(StrEnum):
    APPROVE = "approve"
    DISCARD = "discard"


class NotHeld(Exception):
    """The sync is not held (any more): there is nothing to decide."""


def _finish(sync: Sync) -> None:
    sync.refresh_from_db()
    notify.sync_finished(sync)  # queued; the mail thread sends it


# The pipeline (ingest.syncs: polars, Arrow, the stores) is imported where a job runs it, not
# with this module: the queue's workers, front ends and the worker thread import this one at
# start, and a process that never imports should not load it (~0.75 s of CPU at each start).
# Each function that runs it imports it itself: an accessor returning the module would hide its
# functions' signatures from mypy (a module is only `ModuleType` to it, its attributes `Any`).


def _run_import(district: District, uploads: list[Upload], sync: Sync) -> None:
    from rosterdrop.ingest import syncs

    _finish(syncs.import_uploads(district, uploads, sync=sync))


def _run_approval(sync: Sync) -> None:
    from rosterdrop.ingest import syncs

    _finish(syncs.apply_approved(sync))


def _run(sync: Sync) -> None:
    """Run a sync this process started or claimed: an approval, else an import or a retry."""
    if sync.decided_by:
        _run_approval(sync)
    else:
        _run_import(sync.district, list(sync.uploads.all()), sync)


@app.task(name=RUN_SYNC_TASK, queue=QUEUE, pass_context=True)
def run_sync(context: JobContext, sync_id: int, handed_by: str) -> None:
    """A worker runs the sync that the process `handed_by` started and queued. Only the first
    run takes it: one retried after its worker died finds it taken, and leaves it to
    recovery (interrupted, or an approval held again), so nothing is applied twice."""
    job_id = context.job.id
    assert job_id is not None
    running.add(job_id)
    try:
        sync = Sync.objects.select_related("district").filter(pk=sync_id).first()
        if sync is None:
            return
        with district_lock(sync.district_id) as held:
            if not held:  # a job of the district still runs (a twin retried as stalled)
                _queue(sync, handed_by, AGAIN_SECONDS)
            elif states.take(sync, handed_by):
                _run(sync)
    finally:
        running.discard(job_id)
        connection.close()  # this thread's own connection


def _in_background(sync: Sync) -> None:
    if not settings.WEB_IMPORT_IN_BACKGROUND:
        _run(sync)
    elif settings.JOB_QUEUE:
        _queue(sync, sync.runner)
    else:
        threading.Thread(target=_in_thread, args=(sync,), name="web-import", daemon=True).start()


def _queue(sync: Sync, handed_by: str, delay: int = 0) -> None:
    """Queue `sync`, started or claimed by the process `handed_by`, for a worker."""
    job = run_sync.configure(lock=lock_name(sync.district_id), schedule_in={"seconds": delay})
    job.defer(sync_id=sync.pk, handed_by=handed_by)


def _in_thread(sync: Sync) -> None:
    try:
        _run(sync)
    except Exception:
        log.exception("web import failed")
    finally:
        connection.close()  # this thread's own connection


def start_import(district: District, uploads: list[Upload]) -> Sync:
    sync = states.start(district, uploads)
    _in_background(sync)
    return sync


def decide(sync: Sync, decision: Decision, who: str, ip: str | None, via: str = "") -> None:
    """Approve a held sync (claimed here, so that a double click cannot apply it twice, then
    applied off the request thread) or discard it; the decision is audited.

    Raises NotHeld if it is not held, states.Conflict if someone else decided it first.
    `via`: where the decision came from, as the audit record says it ("api: ").
    """
    if sync.status != Sync.Status.HELD:
        raise NotHeld(f"Sync {sync.pk} is {sync.get_status_display()}, not held.")
    if decision == Decision.APPROVE:
        states.claim_approval(sync, who)
        _in_background(sync)
    else:
        from rosterdrop.ingest import syncs

        syncs.discard(sync, who)
    detail = f"{via}{decision} held sync {sync.pk} of {sync.district.slug}"
    record(AuditEvent.Kind.ADMIN, login=who, ip=ip, detail=detail)


def retry(sync: Sync, who: str, ip: str | None, via: str = "") -> Sync:
    """Import a failed or interrupted sync's files again, as a new sync (returned, running),
    and audit it; raises states.IllegalMove if that cannot be."""
    from rosterdrop.ingest import syncs

    again = syncs.start_retry(sync)
    _in_background(again)
    detail = f"{via}retry sync {sync.pk} of {sync.district.slug} as sync {again.pk}"
    record(AuditEvent.Kind.ADMIN, login=who, ip=ip, detail=detail)
    return again
