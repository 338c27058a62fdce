"""The job queue on PostgreSQL (issue 18 items 2 and 4): front ends and workers as real processes
on one database, uploads sent with OpenSSH's sftp, workers killed and stopped mid-import.

Each test has a database of its own (rd_queue_...), dropped at the end. The slow tests start
processes; a process stops at a named point of its import (ROSTERDROP_PAUSE_AT, see
rosterdrop/process.checkpoint) so that a kill lands at a known moment, never after a sleep.
"""

import csv
import hashlib
import io
import os
import re
import signal
import socket
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from district_logins import district_logins
from ftps_fixtures import DOTTED, cert
from run_fixtures import create_database, drop_database
from sftp_fixtures import PASSWORD, ROSTERDROP, SCHOOL_SMALL, base_env, command, free_port

FIRST_STUDENT = "f0e33289-c386-444c-ac0d-58c34bcaf645"
USERS = sum(1 for _ in (SCHOOL_SMALL / "users.csv").open()) - 1


def school_zip(path: Path, name: str = "Thandiwe") -> Path:
    """school-small as one zip, its first student's given name set to `name` (each variant is
    a real change, never a resent file)."""
    rows = list(csv.DictReader((SCHOOL_SMALL / "users.csv").open(newline="")))
    for row in rows:
        if row["sourcedId"] == FIRST_STUDENT:
            row["givenName"] = name
    users = io.StringIO()
    writer = csv.DictWriter(users, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(SCHOOL_SMALL.iterdir()):
            z.writestr(f.name, users.getvalue() if f.name == "users.csv" else f.read_bytes())
    return path


@dataclass
class Process:
    """A `rosterdrop serve` or `rosterdrop worker` started by a test, its output in a file."""

    proc: subprocess.Popen
    log: Path
    sftp_port: int = 0
    web_port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


class Deployment:
    """One PostgreSQL database and one data folder, with front ends and workers started on
    them as a vendor runs them (`serve --no-worker`, `rosterdrop worker`)."""

    def __init__(self, tmp_path: Path, name: str, slugs: list[str], template: str):
        """`name`: its database's (run_fixtures.Run.database_name); `template`: a migrated
        database (sftp_fixtures.postgres_template) to copy."""
        self.name = name
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"
        create_database(self.name, template)
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.env = {**base_env(self.data), "ROSTERDROP_DATABASE_URL": self.url}
        self.key = tmp_path / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        self.cli("hostkey")
        self.cli("shell", "-c", district_logins(slugs, self.key.with_suffix(".pub")))
        self.known_hosts = tmp_path / "known_hosts"
        self.processes: list[Process] = []

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            command(*args), env=self.env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def _start(self, args: list[str], env: dict[str, str], **ports: int) -> Process:
        log = self.tmp / f"process{len(self.processes)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [ROSTERDROP, *args], env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT
            )
        started = Process(proc, log, **ports)
        self.processes.append(started)
        deadline = time.monotonic() + 120
        while "Ready." not in started.output():
            assert proc.poll() is None, f"{args[0]} ended:\n{started.output()}"
            assert time.monotonic() < deadline, f"{args[0]} never ready:\n{started.output()}"
            time.sleep(0.1)
        return started

    def front_end(self, *extra: str, **env: str) -> Process:
        """`rosterdrop serve --no-worker` (or, with no_worker=False..., plain serve)."""
        sftp, web = free_port(), free_port()
        args = ["serve", "--no-demo", "--no-ftps", "--host", "127.0.0.1"]
        args += ["--sftp-port", str(sftp), "--web-port", str(web), *extra]
        sql = "SELECT public_key FROM intake_serverkey WHERE name = 'ssh-ed25519'"
        [(pub,)] = self.query(sql)  # the deployment's, shared by every front end
        with self.known_hosts.open("a") as f:
            f.write(f"[127.0.0.1]:{sftp} {pub}\n")
        return self._start(args, env, sftp_port=sftp, web_port=web)

    def worker(self, **env: str) -> Process:
        return self._start(["worker"], env)

    def sftp(self, front: Process, login: str, batch: str, *extra: str, check: bool = True):
        cmd = ["sftp", "-b", "-", "-P", str(front.sftp_port), "-i", str(self.key)]
        cmd += ["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
        cmd += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        cmd += [*extra, f"{login}@127.0.0.1"]
        done = subprocess.run(cmd, input=batch, capture_output=True, text=True, timeout=180)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.url) as db:
            return db.execute(sql, params).fetchall()

    def wait_for(self, check, timeout: float = 180, what: str = "the condition"):
        deadline = time.monotonic() + timeout
        while not (value := check()):
            for p in self.processes:
                assert p.proc.poll() is None or p.proc.returncode in (0, 75, -9), p.output()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)
        return value

    def idle(self) -> bool:
        """No upload waits, no sync runs, no import job waits or runs."""
        return not self.query(
            "SELECT 1 FROM inbox_upload WHERE status = 'received' UNION ALL "
            "SELECT 1 FROM ingest_sync WHERE status = 'running' UNION ALL "
            "SELECT 1 FROM procrastinate_jobs WHERE task_name = 'rosterdrop.import_district' "
            "AND status IN ('todo', 'doing')"
        )

    def close(self) -> None:
        for p in self.processes:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(timeout=30)
        drop_database(self.name)


@pytest.fixture
def deploy(tmp_path, request, run, postgres_template):
    made: list[Deployment] = []

    def make(slugs: list[str]) -> Deployment:
        name = run.database_name("queue_" + request.node.name[-20:].strip("_[]"))
        deployment = Deployment(tmp_path, name, slugs, postgres_template)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


def runner_pid(runner: str) -> int:
    found = re.match(r"p(\d+)s", runner)
    assert found, runner
    return int(found[1])


def metric(front: Process, name: str) -> str:
    body = subprocess.run(
        ["curl", "-s", f"http://127.0.0.1:{front.web_port}/metrics"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return "\n".join(line for line in body.splitlines() if line.startswith(name))


@pytest.mark.slow
def test_two_workers_import_each_upload_once_and_one_district_at_a_time(deploy, tmp_path):
    slugs = [f"d{i}" for i in range(6)]
    cluster = deploy(slugs)
    front = cluster.front_end("--no-worker")
    variants = [school_zip(tmp_path / f"v{i}.zip", f"Name{i}") for i in range(4)]
    batch = "".join(f"put {v} roster{i}.zip\n" for i, v in enumerate(variants))
    sending = [threading.Thread(target=cluster.sftp, args=(front, slug, batch)) for slug in slugs]
    for thread in sending:
        thread.start()
    for thread in sending:
        thread.join()
    # No worker yet: every upload waits, one job per district (a second upload joins it).
    assert cluster.query("SELECT count(*) FROM inbox_upload WHERE status = 'received'") == [(24,)]
    assert 'rosterdrop_queue_jobs{state="waiting"} 6.0' in metric(front, "rosterdrop_queue_jobs")
    workers = [cluster.worker(), cluster.worker()]
    cluster.wait_for(cluster.idle, what="the workers to import everything")

    # Each upload imported by exactly one sync, applied; nothing interrupted or failed.
    assert cluster.query("SELECT status, count(*) FROM inbox_upload GROUP BY status") == [
        ("imported", 24)
    ]
    per_upload = cluster.query(
        "SELECT u.id, count(su.sync_id) FROM inbox_upload u "
        "LEFT JOIN ingest_sync_uploads su ON su.upload_id = u.id GROUP BY u.id"
    )
    assert sorted(n for _, n in per_upload) == [1] * 24
    assert cluster.query("SELECT status, count(*) FROM ingest_sync GROUP BY status") == [
        ("applied", 24)
    ]
    # Never two imports of one district at once, and in the order the files came.
    syncs = cluster.query(
        "SELECT d.slug, s.started_at, s.finished_at, s.runner, u.filename FROM ingest_sync s "
        "JOIN districts_district d ON d.id = s.district_id "
        "JOIN ingest_sync_uploads su ON su.sync_id = s.id "
        "JOIN inbox_upload u ON u.id = su.upload_id ORDER BY d.slug, s.started_at"
    )
    for slug in slugs:
        mine = [s for s in syncs if s[0] == slug]
        assert [s[4] for s in mine] == [f"roster{i}.zip" for i in range(4)]
        for before, after in zip(mine, mine[1:], strict=False):
            assert before[2] <= after[1], f"two imports of {slug} at once: {before} {after}"
    # Both workers took part; the front end imported nothing.
    assert {runner_pid(s[3]) for s in syncs} == {w.pid for w in workers}
    # The last file of each district is what its roster holds.
    names = cluster.query(
        'SELECT "givenName" FROM roster_user WHERE sourced_id = %s ORDER BY district_id',
        FIRST_STUDENT,
    )
    assert names == [("Name3",)] * 6
    assert 'rosterdrop_queue_jobs{state="waiting"} 0.0' in metric(front, "rosterdrop_queue_jobs")


def paused_worker(cluster: Deployment, flag: Path, **env: str) -> Process:
    """A worker that stops inside the apply transaction of its next import (roster written,
    change events recorded, not committed)."""
    return cluster.worker(ROSTERDROP_PAUSE_AT="apply", ROSTERDROP_PAUSE_FILE=str(flag), **env)


def wait_paused(cluster: Deployment, flag: Path, worker: Process) -> None:
    cluster.wait_for(flag.exists, what="the worker to reach the apply checkpoint")
    assert int(flag.read_text()) == worker.pid


def assert_applied_once(cluster: Deployment, interrupted: int) -> None:
    """One upload, imported; `interrupted` syncs cut short and the last one applied once."""
    [(upload_status,)] = cluster.query("SELECT status FROM inbox_upload")
    assert upload_status == "imported"
    syncs = cluster.query("SELECT id, status, retry_of_id FROM ingest_sync ORDER BY id")
    assert [s[1] for s in syncs] == ["interrupted"] * interrupted + ["applied"]
    if interrupted:
        assert syncs[-1][2] == syncs[0][0]  # imported again as a retry of the cut one
    users = cluster.query("SELECT count(*) FROM roster_user")
    assert users == [(USERS,)]
    # The change feed says each user was created once: the cut apply left nothing behind.
    created = cluster.query(
        "SELECT (SELECT count(*) FROM feed_event WHERE entity = 'users' AND action = 'created')"
        " + (SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM feed_createdrange"
        " WHERE entity = 'users')"
    )
    assert created == [(USERS,)]


@pytest.mark.slow
def test_a_worker_killed_mid_import_is_replaced_and_the_roster_applied_once(deploy, tmp_path):
    cluster = deploy(["alpha"])
    front = cluster.front_end("--no-worker")
    flag = tmp_path / "paused"
    doomed = paused_worker(cluster, flag)
    cluster.sftp(front, "alpha", f"put {school_zip(tmp_path / 'a.zip')} roster.zip\n")
    wait_paused(cluster, flag, doomed)
    other = cluster.worker()
    doomed.stop(signal.SIGKILL)
    flag.unlink()
    # Its heartbeat stops: `tend` hands the job to the other worker, which recovers the sync.
    cluster.wait_for(cluster.idle, what="the other worker to finish the import")
    assert_applied_once(cluster, interrupted=1)
    [(runner,)] = cluster.query("SELECT runner FROM ingest_sync WHERE status = 'applied'")
    assert runner_pid(runner) == other.pid


@pytest.mark.slow
def test_sigterm_to_a_worker_mid_import_hands_the_job_back(deploy, tmp_path):
    cluster = deploy(["alpha"])
    front = cluster.front_end("--no-worker")
    flag = tmp_path / "paused"
    stopping = paused_worker(cluster, flag, ROSTERDROP_SHUTDOWN_SECONDS="1")
    cluster.sftp(front, "alpha", f"put {school_zip(tmp_path / 'a.zip')} roster.zip\n")
    wait_paused(cluster, flag, stopping)
    other = cluster.worker()
    started = time.monotonic()
    assert stopping.stop(signal.SIGTERM) == 75, stopping.output()  # after a second of grace
    assert time.monotonic() - started < 15
    assert "handing back job" in stopping.output()
    flag.unlink()
    cluster.wait_for(cluster.idle, what="the other worker to import the handed-back job")
    assert_applied_once(cluster, interrupted=1)
    [(runner,)] = cluster.query("SELECT runner FROM ingest_sync WHERE status = 'applied'")
    assert runner_pid(runner) == other.pid


@pytest.mark.slow
def test_sigterm_to_a_worker_lets_its_import_finish_within_the_grace(deploy, tmp_path):
    cluster = deploy(["alpha"])
    front = cluster.front_end("--no-worker")
    flag = tmp_path / "paused"
    stopping = paused_worker(cluster, flag, ROSTERDROP_SHUTDOWN_SECONDS="60")
    cluster.sftp(front, "alpha", f"put {school_zip(tmp_path / 'a.zip')} roster.zip\n")
    wait_paused(cluster, flag, stopping)
    stopping.proc.send_signal(signal.SIGTERM)
    time.sleep(1)  # it is stopping: no new job taken, the running one goes on
    assert stopping.proc.poll() is None
    flag.unlink()
    assert stopping.proc.wait(timeout=120) == 0, stopping.output()
    # Nothing runs or waits (a second job of the district, deferred by `tend` before the sync
    # began, may wait for a worker: it would find nothing to do).
    assert (
        cluster.query(
            "SELECT 1 FROM inbox_upload WHERE status = 'received' UNION ALL "
            "SELECT 1 FROM ingest_sync WHERE status = 'running' UNION ALL "
            "SELECT 1 FROM procrastinate_jobs WHERE status = 'doing'"
        )
        == []
    )
    assert_applied_once(cluster, interrupted=0)


@pytest.mark.slow
def test_two_plain_serves_on_one_database_import_each_upload_once(deploy, tmp_path):
    """Issue 18: two `serve` processes sharing one PostgreSQL imported 9 of 10 uploads twice.
    On PostgreSQL plain serve runs a worker of the queue, so each upload is imported once."""
    slugs = [f"d{i}" for i in range(5)]
    cluster = deploy(slugs)
    serves = [cluster.front_end(), cluster.front_end()]
    variants = [school_zip(tmp_path / f"v{i}.zip", f"Name{i}") for i in range(2)]
    sending = [
        threading.Thread(
            target=cluster.sftp,
            args=(
                serves[n % 2],
                slug,
                "".join(f"put {v} r{i}.zip\n" for i, v in enumerate(variants)),
            ),
        )
        for n, slug in enumerate(slugs)
    ]
    for thread in sending:
        thread.start()
    for thread in sending:
        thread.join()
    cluster.wait_for(cluster.idle, what="the imports")
    assert cluster.query("SELECT status, count(*) FROM inbox_upload GROUP BY status") == [
        ("imported", 10)
    ]
    assert cluster.query("SELECT count(*) FROM ingest_sync") == [(10,)]
    per_upload = cluster.query("SELECT upload_id, count(*) FROM ingest_sync_uploads GROUP BY 1")
    assert sorted(n for _, n in per_upload) == [1] * 10


def test_worker_and_no_worker_need_postgresql(tmp_path):
    env = base_env(tmp_path / "data")  # SQLite
    worker = subprocess.run([ROSTERDROP, "worker"], env=env, capture_output=True, text=True)
    assert worker.returncode == 1
    assert "the job queue needs PostgreSQL" in worker.stderr
    serve = subprocess.run(
        [ROSTERDROP, "serve", "--no-worker"], env=env, capture_output=True, text=True
    )
    assert serve.returncode == 1
    assert "--no-worker needs PostgreSQL" in serve.stderr


# What the queue decides, on the engine of the run (scripts/test runs these on both).
def test_an_upload_a_running_sync_holds_is_not_waiting(district, tmp_path):
    """The double import of issue 18: a second process took an upload that a first one was
    importing (still `received` until its sync ends) for a waiting one."""
    from rosterdrop.inbox.store import receive
    from rosterdrop.ingest import states
    from rosterdrop.intake import worker

    upload = receive(district, "roster.zip", school_zip(tmp_path / "a.zip"), "sftp")
    assert worker.waiting_uploads() == {district: [upload]}
    states.start(district, [upload])  # a worker, here or in another process, imports it
    assert worker.waiting_uploads() == {}


def test_due_districts_are_those_with_work_ready(district, tmp_path, settings):
    from datetime import timedelta

    from rosterdrop.inbox.models import Upload
    from rosterdrop.inbox.store import receive
    from rosterdrop.ingest import states
    from rosterdrop.intake import queue

    district.quiet_period_seconds = 60
    district.save()
    users = receive(district, "users.csv", SCHOOL_SMALL / "users.csv", "sftp")
    assert queue.due_districts() == set()  # a loose file in its quiet period
    Upload.objects.filter(pk=users.pk).update(received_at=users.received_at - timedelta(hours=1))
    assert queue.due_districts() == {district.pk}  # its quiet period is over
    sync = states.start(district, [users])
    assert queue.due_districts() == set()  # being imported
    type(sync).objects.filter(pk=sync.pk).update(runner="p1s1hsomewhereelse")
    type(sync).objects.filter(pk=sync.pk).update(started_at=sync.started_at - timedelta(hours=1))
    type(sync).objects.filter(pk=sync.pk).update(heartbeat_at=sync.started_at - timedelta(hours=1))
    assert queue.due_districts() == {district.pk}  # its process is gone: recover it
    receive(district, "roster.zip", school_zip(tmp_path / "a.zip"), "sftp")
    assert queue.due_districts() == {district.pk}  # a package: at once


@pytest.mark.django_db(transaction=True)
def test_a_web_import_goes_to_the_workers_and_is_applied_once(district, tmp_path, settings):
    """On PostgreSQL the request only queues the sync (a front end never imports), under its
    district's lock; a worker takes it and applies it; the job run again (retried after its
    worker died) finds it taken and applies nothing. On SQLite the web process runs it."""
    from django.db import connection
    from procrastinate import JobContext

    from rosterdrop.inbox.store import receive
    from rosterdrop.ingest import jobs
    from rosterdrop.ingest.models import Sync
    from rosterdrop.roster.models import records

    settings.WEB_IMPORT_IN_BACKGROUND = True
    upload = receive(district, "roster.zip", school_zip(tmp_path / "a.zip"), "web")
    sync = jobs.start_import(district, [upload])
    if connection.vendor != "postgresql":
        while Sync.objects.get(pk=sync.pk).status == "running":
            time.sleep(0.1)
        assert records(district, "users").count() == USERS
        return
    time.sleep(1)  # were it run here, a thread would be importing now
    assert Sync.objects.get(pk=sync.pk).status == "running"
    assert not records(district, "users").exists()
    with connection.cursor() as cursor:  # the queue is empty at the start (conftest)
        cursor.execute("SELECT task_name, lock, args::text FROM procrastinate_jobs")
        [(task, lock, args)] = cursor.fetchall()
    assert (task, lock) == ("rosterdrop.run_sync", f"district:{district.pk}")
    assert args == f'{{"sync_id": {sync.pk}, "handed_by": "{sync.runner}"}}'
    [job] = jobs.app.job_manager.list_jobs(task=jobs.RUN_SYNC_TASK)  # as a worker runs it
    context = JobContext(app=jobs.app, job=job, start_timestamp=0, abort_reason=lambda: None)
    jobs.run_sync(context, sync_id=sync.pk, handed_by=sync.runner)
    assert Sync.objects.get(pk=sync.pk).status == "applied"
    assert records(district, "users").count() == USERS
    finished = Sync.objects.get(pk=sync.pk).finished_at
    jobs.run_sync(context, sync_id=sync.pk, handed_by=sync.runner)  # retried: nothing happens
    assert Sync.objects.get(pk=sync.pk).finished_at == finished


@pytest.mark.django_db(transaction=True)
def test_a_district_has_one_job_waiting_however_many_uploads(district):
    from django.db import connection

    from rosterdrop.intake import queue

    queue.wake(district)
    queue.wake(district)
    if connection.vendor != "postgresql":  # no queue: the worker thread is woken
        assert queue.depth() is None
        return
    assert queue.depth() == {"waiting": 1, "running": 0}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lock, queueing_lock, args::text FROM procrastinate_jobs "
            "WHERE task_name = 'rosterdrop.import_district'"
        )
        assert cursor.fetchall() == [
            (
                f"district:{district.pk}",
                f"district:{district.pk}",
                f'{{"district_id": {district.pk}}}',
            )
        ]


def test_a_job_already_waiting_leaves_the_callers_transaction_usable(district):
    """A second wake while the district's job waits is refused by the queueing lock, in a
    savepoint: a caller with a transaction open (a test, a view in one) carries on with it."""
    from django.db import connection, transaction

    from rosterdrop.districts.models import District
    from rosterdrop.intake import queue

    if connection.vendor != "postgresql":
        pytest.skip("the job queue runs on PostgreSQL")
    with transaction.atomic():
        assert queue.enqueue(district.pk) is True
        assert queue.enqueue(district.pk) is False
        assert District.objects.filter(pk=district.pk).exists()


# Graceful shutdown of serve's SFTP and FTPS sides (any engine; these run the embedded default,
# SQLite).


def slow_upload(server, path: Path, transport: str, kbit: int) -> tuple[threading.Thread, list]:
    """`path` sent as roster.zip at `kbit` kbit/s in a thread, with OpenSSH sftp or curl over
    FTPS, once the server holds part of it."""
    if transport == "sftp":
        batch = f"put {path} roster.zip\n"
        cmd = None
    else:
        cmd = ["curl", "-sS", "--fail", "--max-time", "120", "--cacert", str(cert(server))]
        cmd += ["--ssl-reqd", "--limit-rate", f"{kbit // 8}k", "--user", f"{DOTTED}:{PASSWORD}"]
        cmd += ["-T", str(path), f"ftp://127.0.0.1:{server.ftps_port}/roster.zip"]
    result: list = []

    def send() -> None:
        if cmd is None:
            result.append(server.openssh(batch, "alpha", "-l", str(kbit), check=False))
        else:
            result.append(subprocess.run(cmd, capture_output=True, text=True))

    thread = threading.Thread(target=send)
    thread.start()
    partial = server.data_dir / "sftp-tmp" / "alpha"
    server.wait_for(lambda: partial.is_dir() and any(partial.iterdir()), 30, "the upload to begin")
    return thread, result


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["sftp", "ftps"])
def test_sigterm_to_serve_lets_an_upload_in_flight_finish(make_server, tmp_path, transport):
    server = make_server(ROSTERDROP_SHUTDOWN_SECONDS="60")
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(1_500_000))
    thread, result = slow_upload(server, big, transport, 2000)  # about six seconds
    proc = server.proc
    proc.send_signal(signal.SIGTERM)
    port = server.port if transport == "sftp" else server.ftps_port
    server.wait_for(lambda: refused(port), 10, f"the {transport} port to close")
    assert proc.poll() is None  # still draining: the upload goes on
    thread.join(timeout=120)
    assert result[0].returncode == 0, result[0].stdout + result[0].stderr
    assert proc.wait(timeout=30) == 0
    [upload] = server.uploads()
    assert (upload["filename"], upload["source"], upload["size"]) == (
        "roster.zip",
        transport,
        1_500_000,
    )
    assert upload["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert upload["status"] == "received"  # kept; imported by the next start's worker


@pytest.mark.slow
def test_sigterm_to_serve_cuts_an_sftp_upload_past_the_grace_and_keeps_nothing(
    make_server, tmp_path
):
    server = make_server(ROSTERDROP_SHUTDOWN_SECONDS="1")
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(1_500_000))
    thread, result = slow_upload(server, big, "sftp", 200)  # about a minute
    proc = server.proc
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 15
    thread.join(timeout=60)
    assert result[0].returncode != 0  # the client was told: it sends again later
    assert server.uploads() == []
    assert list((server.data_dir / "sftp-tmp" / "alpha").iterdir()) == []
    assert not (server.root() / "roster.zip").exists()
