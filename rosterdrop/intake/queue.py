"""The job queue on PostgreSQL (procrastinate): imports spread over worker processes, one
district at a time, districts in parallel.

A job names a district, not an upload: it recovers what a dead process left of the district
(`recovery.recover(district)`) and imports whatever of it is ready (`worker.run_district`), so
a job run twice, or retried after its worker died, finds nothing left to do rather than
importing again. Its procrastinate `lock` runs a district's jobs one after another and its
`queueing_lock` keeps at most one waiting (a new upload joins the waiting job). Inside, the job
holds a PostgreSQL advisory lock on the district for as long as it runs; that lock ends with
the worker's connection, so even a job retried while its first worker still runs (a missed
heartbeat) cannot import the district twice: it leaves the district to that one.

The front ends defer a job when an upload is stored (`woken`, on `upload_waiting`); `tend`,
every few seconds on some worker, does the rest: it hands the jobs of workers that stopped
beating to others (procrastinate's stalled jobs; recovery is not automatic there) and defers a
job for each district with a package waiting, loose files whose quiet period is over, or a
sync a dead process left running. On SQLite there is no queue: `serve` runs
`worker.run_forever` in a thread.

The SIS search index of a sync's uploads is built by a job of its own (`build_index`, one
district at a time, under a lock of its own: the district's next import need not wait for
it), deferred once a sync's outcome is committed (`index_wanted`), and by `tend` for a sync
whose index a dead process left unbuilt (ingest/index_builds.py).
"""

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management import call_command
from django.db import close_old_connections, connection, transaction
from django.utils import timezone
from procrastinate import JobContext, exceptions
from procrastinate.contrib.django import app
from procrastinate.jobs import JobDeferrer, Status

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import index_builds, recovery, states
from rosterdrop.ingest.jobs import (  # and its task, run_sync, for the workers
    LOCK_SPACE,
    QUEUE,
    district_lock,
    lock_name,
    running,
)
from rosterdrop.ingest.models import Sync, SyncStatus
from rosterdrop.intake import worker

log = logging.getLogger(__name__)

IMPORT_TASK = "rosterdrop.import_district"
INDEX_TASK = "rosterdrop.build_index"
# Imports are taken before index builds waiting beside them (procrastinate: higher first).
INDEX_PRIORITY = -1
# A worker beats this often; one silent for STALLED_SECONDS is taken for dead and its jobs
# handed on. Short, since a false alarm costs nothing (the advisory lock): a retried job of
# a district still being imported waits its turn.
HEARTBEAT_SECONDS = 2.0
STALLED_SECONDS = 10.0
# A job handed back at shutdown is taken up again this much later (the process is gone by then).
HAND_BACK_SECONDS = 2
# Exit status of a worker that handed back a job it could not finish in the grace time.
HANDED_BACK = 75
# Once no import runs, how long a stopping worker may take to tell the database it is gone.
UNREGISTER_SECONDS = 5.0


@app.task(name=IMPORT_TASK, queue=QUEUE, pass_context=True)
def import_district(context: JobContext, district_id: int) -> None:
    """Settle what a dead process left of the district, then import what of it is ready."""
    with _running(context), district_lock(district_id) as held:
        if not held:  # for what is left when that job ends, `tend` defers a job
            log.warning("district %s is being imported by another job", district_id)
            return
        district = District.objects.filter(pk=district_id).first()
        if district is None:  # deleted meanwhile
            return
        recovery.recover(district)
        waiting = worker.waiting_uploads(district).get(district, [])
        worker.run_district(district, waiting, timezone.now())


@contextlib.contextmanager
def _running(context: JobContext) -> Iterator[None]:
    """A job this worker runs: a stopping worker waits for it, then hands it back; its
    thread's connection is closed after (and any advisory lock held on it with it)."""
    job_id = context.job.id
    assert job_id is not None
    running.add(job_id)
    try:
        yield
    finally:
        running.discard(job_id)
        connection.close()


def _defer_once(job: JobDeferrer, district_id: int) -> bool:
    """Defer a district's job; False if one already waits under its queueing lock (it does
    whatever of its district is due when it runs). In a savepoint: the refused insert would
    otherwise abort a transaction the caller has open (PostgreSQL refuses all that follows)."""
    try:
        with transaction.atomic():
            job.defer(district_id=district_id)
    except exceptions.AlreadyEnqueued:
        return False
    return True


def enqueue(district_id: int) -> bool:
    """Defer an import job for the district; False if one already waits."""
    key = lock_name(district_id)
    return _defer_once(import_district.configure(lock=key, queueing_lock=key), district_id)


@app.task(name=INDEX_TASK, queue=QUEUE, pass_context=True)
def build_index(context: JobContext, district_id: int) -> None:
    """Build the SIS search index of the district's syncs that want one."""
    with _running(context):
        district = District.objects.filter(pk=district_id).first()
        if district is not None:
            index_builds.build(district)


def enqueue_index(district_id: int) -> bool:
    """Defer an index job for the district; False if one already waits."""
    key = f"index:{district_id}"
    job = build_index.configure(lock=key, queueing_lock=key, priority=INDEX_PRIORITY)
    return _defer_once(job, district_id)


def index_wanted(sender, sync: Sync, **kwargs) -> None:
    """`ingest.signals.index_wanted`: a sync's outcome was recorded. A job builds its index
    once that is committed; on SQLite the worker thread's next pass does (woken now, if it
    runs in this process)."""
    if settings.JOB_QUEUE:
        district_id = sync.district_id
        # Robust: a job that could not be deferred is logged, never the import's failure
        # (`tend` defers it).
        transaction.on_commit(lambda: enqueue_index(district_id), robust=True)
    else:
        worker.wake()


def wake(district: District) -> None:
    """Import the district's waiting files now (an upload, "Import now", a pause lifted): a
    job on PostgreSQL, the worker thread's next pass on SQLite."""
    if settings.JOB_QUEUE:
        enqueue(district.pk)
    else:
        worker.wake(district.pk)


def woken(sender, upload: Upload, **kwargs) -> None:
    """`inbox.signals.upload_waiting`: an upload was stored."""
    wake(upload.district)


def due_districts() -> set[int]:
    """Districts a job should run for now: a package waiting, loose files whose quiet period
    is over (or that someone asked to import now), a sync left running by a dead process."""
    now = timezone.now()
    due = {
        district.pk
        for district, uploads in worker.waiting_uploads().items()
        if worker.ready(district, uploads, now)
    }
    for sync in Sync.objects.filter(status=SyncStatus.RUNNING):
        if states.is_dead(sync):
            due.add(sync.district_id)
    return due


def defer_due() -> int:
    """Defer a job for every due district, and an index job for every district with an index
    to build; how many were deferred (not already waiting)."""
    close_old_connections()
    try:
        imports = sum(enqueue(district_id) for district_id in sorted(due_districts()))
        indexes = sum(map(enqueue_index, sorted(index_builds.due_districts())))
        return imports + indexes
    finally:
        connection.close()


@app.periodic(cron="* * * * * */5")  # every five seconds (croniter's sixth field)
@app.task(name="rosterdrop.tend", queue=QUEUE, queueing_lock="rosterdrop.tend", pass_context=True)
async def tend(context: JobContext, timestamp: int) -> None:
    """Hand stalled workers' jobs on, and defer the jobs that are due (imports, index
    builds)."""
    manager = context.app.job_manager
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_SECONDS):
        log.warning("retrying job %s of a worker that stopped: %s", job.id, job.call_string)
        try:
            await manager.retry_job(job)
        except exceptions.UniqueViolation:  # a job of its district waits: that one will do
            assert job.id is not None
            await manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
    await sync_to_async(defer_due, thread_sensitive=False)()


@app.periodic(cron="17 * * * *")  # hourly
@app.task(name="rosterdrop.housekeeping", queue=QUEUE, queueing_lock="rosterdrop.housekeeping")
def housekeeping(timestamp: int) -> None:
    """Retention, and what recovery settles outside any district's import (temporary files
    of dead processes, web uploads whose import never began)."""
    try:
        worker.apply_retention()
        recovery.tidy()
    finally:
        connection.close()


def run(stop: threading.Event, concurrency: int, grace: float) -> int:
    """Run a procrastinate worker until `stop` is set; then wait up to `grace` seconds for the
    imports it runs, and hand back those still running (their jobs are retried by another
    worker, which recovers the sync: it is imported again once, nothing was applied), ending
    the process with HANDED_BACK. Otherwise the exit status for the command: 0, or 1 when the
    worker failed or could not stop cleanly (its database unreachable): then it is left behind
    on a loop of its own, never closed, rather than holding up the process's exit."""
    return asyncio.new_event_loop().run_until_complete(_run(stop, concurrency, grace))


async def _run(stop: threading.Event, concurrency: int, grace: float) -> int:
    # The worker needs an async connection of its own (LISTEN/NOTIFY); tasks still defer
    # through the Django connector of the app their task belongs to.
    worker_app = app.with_connector(app.connector.get_worker_connector())  # type: ignore[attr-defined]
    await worker_app.open_async()
    working = asyncio.create_task(
        worker_app.run_worker_async(
            queues=[QUEUE],
            name=f"rosterdrop-{os.getpid()}",
            concurrency=concurrency,
            install_signal_handlers=False,
            update_heartbeat_interval=HEARTBEAT_SECONDS,
            stalled_worker_timeout=STALLED_SECONDS,
            delete_jobs="successful",
        )
    )
    stopped = asyncio.create_task(asyncio.to_thread(stop.wait))
    await asyncio.wait([working, stopped], return_when=asyncio.FIRST_COMPLETED)
    if working.done():  # the worker ended on its own (the database went away)
        stop.set()  # and so ends the thread waiting for it
        log.error("the worker stopped: %r", working.exception())
        return 1
    working.cancel()  # procrastinate's graceful stop: no new job, running ones finish
    loop = asyncio.get_running_loop()
    deadline, idle_since = loop.time() + grace, None
    while loop.time() < deadline:
        if (await asyncio.wait([working], timeout=0.2))[0]:
            await worker_app.close_async()
            return 0
        idle_since = None if running else (idle_since or loop.time())
        if idle_since is not None and loop.time() - idle_since > UNREGISTER_SECONDS:
            log.error("the worker could not stop cleanly: is the database reachable?")
            return 1
    retry_at = timezone.now() + timedelta(seconds=HAND_BACK_SECONDS)
    for job_id in list(running):
        log.warning("handing back job %s: still running after %g s", job_id, grace)
        with contextlib.suppress(exceptions.UniqueViolation):  # one waits: it will do
            await worker_app.job_manager.retry_job_by_id_async(job_id, retry_at=retry_at)
    # The import's thread cannot be stopped: end the process, as a crash would. Its
    # transaction is rolled back with the connection; the sync is recovered by the job.
    logging.shutdown()
    os._exit(HANDED_BACK)


def prepare() -> None:
    """At the start of `serve` or `rosterdrop worker`: migrate the database, and on PostgreSQL
    one process at a time (front ends and workers of a deployment may start together; key 0:
    no district has that id), then settle what a dead process of this host left outside any
    sync (its temporary files: no worker thread's recovery runs here to do it)."""
    if not settings.JOB_QUEUE:
        call_command("migrate", interactive=False, verbosity=0)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, 0)", [LOCK_SPACE])
    try:
        call_command("migrate", interactive=False, verbosity=0)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, 0)", [LOCK_SPACE])
    recovery.tidy()


def depth() -> dict[str, int] | None:
    """Import jobs in the queue now, waiting and running (None without a queue: SQLite)."""
    if not settings.JOB_QUEUE:
        return None
    with connection.cursor() as cursor:  # procrastinate's own table (its models are read-only)
        cursor.execute(
            "SELECT status, count(*) FROM procrastinate_jobs WHERE queue_name = %s "
            "AND task_name = %s AND status IN ('todo', 'doing') GROUP BY status",
            [QUEUE, IMPORT_TASK],
        )
        counts = dict(cursor.fetchall())
    return {"waiting": counts.get("todo", 0), "running": counts.get("doing", 0)}
