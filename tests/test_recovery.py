"""Nothing lost after a crash: the states of uploads and syncs, and their recovery.

The kill tests run a real `rosterdrop serve` (or `rosterdrop import`) in a subprocess and stop
it with kill -9 at a named point (ROSTERDROP_PAUSE_AT, rosterdrop/process.checkpoint: the process
waits there, so the kill lands at a known moment, no sleeps), then start it again.
"""

import json
import os
import re
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
import sftp_fixtures
from django.db import connection
from sftp_fixtures import ROSTERDROP, SCHOOL_SMALL, base_env

from rosterdrop import process
from rosterdrop.ingest import states
from rosterdrop.ingest.states import SyncStatus

USERS = sum(1 for _ in (SCHOOL_SMALL / "users.csv").open()) - 1


def school_zip(path: Path, users: int | None = None) -> Path:
    """school-small as one zip; `users`: keep only the first so many users (a big removal)."""
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(SCHOOL_SMALL.iterdir()):
            data = f.read_bytes()
            if users is not None and f.name == "users.csv":
                data = b"".join(data.splitlines(keepends=True)[: users + 1])
            z.writestr(f.name, data)
    return path


def temporary_files(data: Path) -> list[Path]:
    """What an import or a transfer leaves only while it runs."""
    found = list((data / "tmp").glob("*")) + list((data / "roster").glob("*.tmp"))
    found += list(data.glob("inbox/*/.incoming-*")) + list(data.glob("sftp-tmp/*/*"))
    return found


def wait_paused(flag: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert proc.poll() is None, "the process ended before it reached the checkpoint"
        assert time.monotonic() < deadline, "the checkpoint was never reached"
        time.sleep(0.05)


def paused_server(make_server, flag: Path, data_dir=None, **env: str):
    """A server that stops at the apply stage of its next import."""
    return make_server(
        data_dir, ROSTERDROP_PAUSE_AT="apply", ROSTERDROP_PAUSE_FILE=str(flag), **env
    )


def kill(server) -> None:
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=20)
    server.proc = None


def restart(make_server, server):
    """The same data folder, served again (recovery runs at start), once idle."""
    again = make_server(server.data_dir)
    again.wait_idle(120)
    return again


def assert_recovered(server) -> None:
    """No sync running, each upload imported exactly once (one applied sync), no temporary
    file left, and the roster holds each user once."""
    assert not server.query("select id from ingest_sync where status = 'running'")
    for upload in server.uploads():
        applied = server.query(
            "select s.id from ingest_sync s join ingest_sync_uploads su on su.sync_id = s.id "
            "where su.upload_id = ? and s.status in ('applied', 'applied_with_errors')",
            upload["id"],
        )
        assert len(applied) == 1, dict(upload)
        assert upload["status"] == "imported"
    assert temporary_files(server.data_dir) == []
    [(users,)] = server.query(
        "select count(*) from roster_user where status = 'active' and district_id = "
        "(select id from districts_district where slug = 'alpha')"
    )
    assert users == USERS


# -- the states, one owner ------------------------------------------------------------------


def test_a_move_not_declared_raises(district, school):
    from rosterdrop.inbox.store import receive

    upload = receive(district, "Users.csv", school / "users.csv", "web")
    states.settle([upload], states.UploadStatus.UNMATCHED, "not a file of the format")
    with pytest.raises(states.IllegalMove):
        states.settle([upload], states.UploadStatus.IMPORTED, "imported after all?")
    sync = states.start(district, [])
    states.move(sync, SyncStatus.APPLIED)
    with pytest.raises(states.IllegalMove):
        states.move(sync, SyncStatus.RUNNING)
    with pytest.raises(states.IllegalMove):
        states.check(SyncStatus.DISCARDED, SyncStatus.HELD)


def test_a_move_made_by_someone_else_first_is_a_conflict(district):
    from rosterdrop.ingest.models import Sync
    from rosterdrop.ingest.syncs import discard

    sync = states.start(district, [])
    states.move(sync, SyncStatus.HELD)
    other = Sync.objects.get(pk=sync.pk)
    states.claim_approval(other, "ana")
    with pytest.raises(states.Conflict):
        discard(sync, "bob")  # it read "held", but Ana took it meanwhile
    assert Sync.objects.get(pk=sync.pk).decided_by == "ana"


def test_no_status_of_a_sync_or_an_upload_is_written_outside_states():
    """One owner: a status written anywhere else would skip the declared moves."""
    root = Path(states.__file__).parents[1]
    writes = re.compile(
        r"\b(sync|upload|again|held|earlier)\.status\s*=[^=]"
        r"|(Sync|Upload)\.objects\.[^\n]*\.update\([^)]*\bstatus="
        r"|(Sync|Upload)\.objects\.create\([^)]*\bstatus="
    )
    found = [
        f"{path.relative_to(root)}: {line.strip()}"
        for path in root.rglob("*.py")
        if path.name != "states.py" and "migrations" not in path.parts
        for line in path.read_text().splitlines()
        if writes.search(line)
    ]
    assert found == []


def test_a_process_is_alive_by_pid_and_start_time():
    me = process.me()
    assert me.alive and process.parse(str(me)) == me
    reused = process.Runner(me.host, me.pid, me.started + 1)  # the same pid, another process
    assert not reused.alive
    child = subprocess.Popen(["true"])
    child.wait()
    assert not process.Runner(me.host, child.pid, me.started).alive
    assert process.Runner("otherhost", child.pid, 1).alive  # never guessed dead


@pytest.mark.django_db(transaction=True)
def test_a_sync_run_on_another_host_is_dead_once_its_heartbeat_is_old(district):
    from datetime import timedelta

    from django.utils import timezone

    from rosterdrop.ingest.models import Sync
    from rosterdrop.ingest.recovery import recover

    elsewhere = "p4242s99hotherhost"
    beating, silent = states.start(district, []), states.start(district, [])
    Sync.objects.filter(pk__in=[beating.pk, silent.pk]).update(runner=elsewhere)
    old = timezone.now() - timedelta(seconds=states.LEASE_SECONDS + 60)
    Sync.objects.filter(pk=silent.pk).update(heartbeat_at=old)
    assert recover().interrupted == [silent.pk]
    assert Sync.objects.get(pk=beating.pk).status == "running"
    mine = states.start(district, [])
    Sync.objects.filter(pk=mine.pk).update(heartbeat_at=old)
    assert states.beat() == 1  # what this process's heartbeat thread does every BEAT_SECONDS
    assert not states.is_dead(Sync.objects.get(pk=mine.pk))


def heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sync-heartbeat"]


def test_the_heartbeat_thread_stops_and_starts_again(district):
    """The thread that renews heartbeats can be stopped (conftest stops it after each test: the
    database is the test's alone), and a sync started later starts it again. On SQLite there
    is none: every process is on this host, and its beats only failed on an import's write
    lock ("sync heartbeat failed: database is locked", every beat of a long import)."""
    states.start(district, [])
    if connection.vendor == "sqlite":
        assert heartbeats() == []
        return
    [thread] = heartbeats()
    states.stop_beating()
    assert not thread.is_alive()
    assert heartbeats() == []
    states.start(district, [])  # a sync started later beats again
    assert len(heartbeats()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_dead_on_another_host_is_taken_over_within_a_minute(district):
    """Its jobs are handed on within seconds (the queue's worker heartbeats); its sync must
    not then wait five minutes to be recovered and imported again."""
    from datetime import timedelta

    from django.utils import timezone

    from rosterdrop.ingest.models import Sync

    sync = states.start(district, [])
    ago = timezone.now() - timedelta(seconds=70)
    Sync.objects.filter(pk=sync.pk).update(runner="p4242s99hotherhost", heartbeat_at=ago)
    assert states.is_dead(Sync.objects.get(pk=sync.pk))
    assert states.LEASE_SECONDS >= 5 * states.BEAT_SECONDS  # a late beat is not a death


# -- recovery, in process -------------------------------------------------------------------


def dead_runner() -> str:
    me = process.me()
    return str(process.Runner(me.host, me.pid, me.started + 1))


def test_only_temporary_files_of_dead_processes_are_removed(settings, tmp_path):
    from rosterdrop.ingest.recovery import sweep

    dead, alive = dead_runner(), str(process.me())
    data = settings.DATA_DIR = tmp_path
    for folder in ("tmp", "roster", "inbox/x", "sftp-tmp/x"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    left = [
        data / f"tmp/spill-{dead}~abc",
        data / f"tmp/upload-{dead}~abc",
        data / f"roster/7-{dead}~abc.tmp",
        data / f"inbox/x/.incoming-{dead}~abc",
        data / f"sftp-tmp/x/.upload-{dead}~abc",
        data / "tmp/spill-oldversion",  # no process named, a day old
    ]
    kept = [
        data / f"tmp/spill-{alive}~abc",
        data / f"roster/7-{alive}~abc.tmp",
        data / "roster/7-t123.arrow",  # a published snapshot
        data / "inbox/x/00000001-0123456789abcdef",  # an upload
        data / "tmp/spill-newversion",  # no process named, fresh
    ]
    for path in left[:2] + kept[:1]:
        path.mkdir()
        (path / "users.spill").write_bytes(b"x" * 1000)
    for path in left[2:] + kept[1:]:
        path.write_bytes(b"x")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(left[-1], (day_ago, day_ago))
    assert sorted(sweep()) == sorted(left)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left)


@pytest.mark.django_db(transaction=True)
def test_an_interrupted_approval_is_held_again_with_its_issues(district, school):
    from web_fixtures import held_sync

    from rosterdrop.ingest.recovery import recover

    sync = held_sync(district, school)
    issues, changes = sync.issues.count(), sync.record_changes.count()
    assert changes
    states.claim_approval(sync, "ana")
    type(sync).objects.filter(pk=sync.pk).update(runner=dead_runner())  # its process died
    assert recover().held_again == [sync.pk]
    sync.refresh_from_db()
    assert sync.status == "held" and "approval by ana was interrupted" in sync.message
    assert (sync.issues.count(), sync.record_changes.count()) == (issues, changes)


@pytest.mark.django_db(transaction=True)
def test_a_sync_of_a_live_process_is_left_running(district, school):
    from rosterdrop.ingest.recovery import recover

    sync = states.start(district, [])
    assert recover().interrupted == []
    sync.refresh_from_db()
    assert sync.status == "running"


@pytest.mark.django_db(transaction=True)
def test_web_and_cli_uploads_whose_import_never_began_are_failed(district, school):
    from datetime import timedelta

    from django.utils import timezone

    from rosterdrop.inbox.models import Upload
    from rosterdrop.inbox.store import receive
    from rosterdrop.ingest.recovery import recover

    stranded = receive(district, "users.csv", school / "users.csv", "web")
    fresh = receive(district, "orgs.csv", school / "orgs.csv", "cli")  # its import may start
    waiting = receive(district, "courses.csv", school / "courses.csv", "sftp")  # the worker's
    hours_ago = timezone.now() - timedelta(hours=2)
    Upload.objects.filter(pk__in=[stranded.pk, waiting.pk]).update(received_at=hours_ago)
    assert recover().never_started == 1
    statuses = {u.filename: (u.status, u.outcome) for u in Upload.objects.all()}
    assert (
        statuses["users.csv"][0] == "failed" and "Send the files again" in statuses["users.csv"][1]
    )
    assert statuses["orgs.csv"][0] == statuses["courses.csv"][0] == "received"
    assert fresh.pk and waiting.pk


@pytest.mark.django_db(transaction=True)
def test_an_upload_is_seen_only_once_complete(district, school, tmp_path, monkeypatch):
    """The worker never reads an upload whose file is not yet under its recorded path (one
    of 200 concurrent SFTP uploads was lost so: its row was read before its path was saved)."""
    from rosterdrop.inbox.models import Upload
    from rosterdrop.inbox.store import receive, stored_file

    flag = tmp_path / "paused"
    monkeypatch.setenv("ROSTERDROP_PAUSE_AT", "received")
    monkeypatch.setenv("ROSTERDROP_PAUSE_FILE", str(flag))
    monkeypatch.setattr("django.conf.settings.WORKER_SOURCES", ["cli"])
    from django.db import connection

    def upload():
        try:
            receive(district, "users.csv", school / "users.csv", "cli")
        finally:
            connection.close()

    thread = threading.Thread(target=upload)
    thread.start()
    while not flag.exists():
        time.sleep(0.01)
    try:
        from rosterdrop.intake.worker import waiting_uploads

        seen = [u for uploads in waiting_uploads().values() for u in uploads]
        assert seen == []
    finally:
        monkeypatch.delenv("ROSTERDROP_PAUSE_AT")
        flag.unlink()
        thread.join()
    [done] = Upload.objects.all()
    assert stored_file(done).is_file()


@pytest.mark.django_db(transaction=True)
def test_a_failed_sync_is_retried_by_an_operator_as_a_new_sync(district, school, settings):
    import io

    from django.core.management import call_command
    from django.test import Client
    from web_fixtures import make_user

    from rosterdrop.ingest.syncs import import_path
    from rosterdrop.web.status import glance

    settings.WEB_IMPORT_IN_BACKGROUND = False
    broken = school / "roster.zip"
    broken.write_bytes(b"not a zip at all" * 100)
    failed = import_path(district, broken)
    assert failed.status == "failed"

    def api(user) -> Client:
        out = io.StringIO()
        call_command("token", "create", user.username, stdout=out)
        return Client(headers={"Authorization": f"Bearer {out.getvalue().strip()}"})

    admin, operator = (
        make_user("data@springfield.test", district),
        make_user("ops@x.test", None, True),
    )
    assert api(admin).post(f"/api/syncs/{failed.pk}/retry").status_code == 403
    answer = api(operator).post(f"/api/syncs/{failed.pk}/retry")
    assert answer.status_code == 200 and answer.json()["id"] != failed.pk
    again = type(failed).objects.get(pk=answer.json()["id"])
    assert again.retry_of_id == failed.pk and again.status == "failed"  # the same bytes
    interrupted = states.start(district, [])
    states.move(interrupted, SyncStatus.INTERRUPTED)
    assert glance(district).state == "failed"
    applied = states.start(district, [])
    states.move(applied, SyncStatus.APPLIED)
    assert api(operator).post(f"/api/syncs/{applied.pk}/retry").status_code == 409


# -- kill -9 of the real server and the real CLI --------------------------------------------


@pytest.mark.slow
def test_kill_during_apply_imports_the_upload_again_once(make_server, tmp_path):
    flag = tmp_path / "paused"
    server = paused_server(make_server, flag)
    server.openssh(f"put {school_zip(tmp_path / 'roster.zip')} roster.zip\n")
    wait_paused(flag, server.proc)
    assert [p.name.split("-")[0] for p in (server.data_dir / "tmp").iterdir()].count("spill") == 1
    assert list((server.data_dir / "roster").glob("*.tmp"))  # the staged snapshot
    kill(server)
    server = restart(make_server, server)
    first, again = server.syncs()
    assert first["status"] == "interrupted" and f"sync {again['id']}" in first["message"]
    assert again["status"] == "applied" and again["retry_of_id"] == first["id"]
    assert_recovered(server)


@pytest.mark.slow
def test_kill_during_approval_holds_it_again(make_server, tmp_path):
    server = make_server()
    server.cli("import", str(school_zip(tmp_path / "full.zip")), "--district", "alpha")
    server.cli("import", str(school_zip(tmp_path / "cut.zip", users=3)), "--district", "alpha")
    held = server.syncs()[-1]
    assert held["status"] == "held"
    counted = "select (select count(*) from ingest_change where sync_id = ?), "
    counted += "(select count(*) from ingest_issue where sync_id = ?)"
    [before] = server.query(counted, held["id"], held["id"])
    assert before[0] and before[1]  # what it would remove, and the rows it could not read
    server.cli("user", "add", "op@example.org", "--operator", "--password-stdin", input="x" * 12)
    token = server.cli("token", "create", "op@example.org").strip()
    server.stop()
    flag = tmp_path / "paused"
    server = paused_server(make_server, flag, data_dir=server.data_dir)
    answer = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", f"Authorization: Bearer {token}"]
        + [f"http://127.0.0.1:{server.web_port}/api/syncs/{held['id']}/approve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 0, answer.stderr
    wait_paused(flag, server.proc)
    assert server.syncs()[-1]["status"] == "running"
    kill(server)
    server = restart(make_server, server)
    again = server.syncs()[-1]
    assert again["status"] == "held" and "interrupted" in again["message"]
    [after] = server.query(counted, held["id"], held["id"])
    assert tuple(after) == tuple(before)  # its issues and changes as they were
    server.cli("sync", "approve", str(held["id"]))
    assert server.syncs()[-1]["status"] == "applied_with_errors"
    assert not server.query("select id from ingest_sync where status = 'running'")
    assert temporary_files(server.data_dir) == []


def web_upload(server, path: Path, tmp_path: Path) -> None:
    """Sign in and upload `path` on the district's page with curl (a real HTTP client)."""
    server.cli("user", "add", "op@example.org", "--operator", "--password-stdin", input="x" * 12)
    jar, base = tmp_path / "cookies", f"http://127.0.0.1:{server.web_port}"

    def curl(*args: str) -> str:
        result = subprocess.run(
            ["curl", "-sS", "-b", str(jar), "-c", str(jar), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def token(page: str) -> str:
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]

    login = curl(f"{base}/accounts/login/")
    curl(
        *("-d", f"csrfmiddlewaretoken={token(login)}", "-d", "username=op@example.org"),
        *("-d", f"password={'x' * 12}", f"{base}/accounts/login/"),
    )
    page = curl(f"{base}/d/alpha/")
    curl(
        *("-F", f"csrfmiddlewaretoken={token(page)}", "-F", f"files=@{path}"),
        f"{base}/d/alpha/upload/",
    )


@pytest.mark.slow
def test_kill_during_a_web_uploads_import_imports_it_again_once(make_server, tmp_path):
    flag = tmp_path / "paused"
    server = paused_server(make_server, flag, ROSTERDROP_SECURE_COOKIES="0")
    web_upload(server, school_zip(tmp_path / "roster.zip"), tmp_path)
    wait_paused(flag, server.proc)
    [upload] = server.uploads()
    assert upload["source"] == "web"
    kill(server)
    server = restart(make_server, server)
    first, again = server.syncs()
    assert (first["status"], again["status"]) == ("interrupted", "applied")
    assert_recovered(server)


@pytest.mark.slow
def test_kill_of_rosterdrop_import_imports_it_again_once(make_server, tmp_path):
    server = make_server()
    server.stop()
    flag = tmp_path / "paused"
    env = {**base_env(server.data_dir), "ROSTERDROP_PAUSE_AT": "apply"}
    env["ROSTERDROP_PAUSE_FILE"] = str(flag)
    zipped = school_zip(tmp_path / "roster.zip")
    cli = subprocess.Popen(
        [ROSTERDROP, "import", str(zipped), "--district", "alpha"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_paused(flag, cli)
    cli.kill()
    cli.wait()
    assert temporary_files(server.data_dir)
    server = restart(make_server, server)
    first, again = server.syncs()
    assert (first["status"], again["status"]) == ("interrupted", "applied")
    assert server.uploads()[0]["source"] == "cli"
    assert_recovered(server)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own, whose size the test can shrink (root only; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)])
    if made.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def resize(mount: Path, free: int) -> None:
    """Leave `free` bytes free on the tmpfs at `mount`."""
    st = os.statvfs(mount)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    subprocess.run(["mount", "-o", f"remount,size={used + free}", str(mount)], check=True)


@pytest.mark.slow
def test_a_disk_full_during_an_import_fails_clearly_and_can_be_retried(
    sftp_template, small_disk, tmp_path
):
    """The data folder's disk fills while an import spills: the sync fails with a message
    saying so (never `running`), nothing is left behind, and `sync retry` imports it once."""
    data = small_disk / "data"
    subprocess.run(["cp", "-a", str(sftp_template[0]), str(data)], check=True)
    flag = tmp_path / "paused"
    env = {**base_env(data), "ROSTERDROP_PAUSE_AT": "received", "ROSTERDROP_PAUSE_FILE": str(flag)}
    cli = subprocess.Popen(
        [ROSTERDROP, "import", str(sftp_fixtures.DISTRICT_LARGE), "--district", "alpha", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_paused(flag, cli)
    resize(small_disk, 1 << 20)  # the upload is kept; its import has 1 MB to work in
    flag.unlink()
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 1, err
    server = sftp_fixtures.Server(data, sftp_template[1], {})
    [failed] = server.syncs()
    assert failed["status"] == "failed" and "disk was full" in failed["message"]
    [issue] = server.query("select * from ingest_issue where sync_id = ?", failed["id"])
    assert issue["code"] == "disk_full" and f"sync retry {failed['id']}" in issue["message"]
    assert temporary_files(data) == []
    resize(small_disk, 256 << 20)  # the operator frees space
    again = json.loads(server.cli("sync", "retry", str(failed["id"]), "--json"))
    assert again["status"] == "applied"
    [upload] = server.uploads()
    assert upload["status"] == "imported"
    assert [s["status"] for s in server.syncs()] == ["failed", "applied"]
    assert server.syncs()[1]["retry_of_id"] == failed["id"]
    assert temporary_files(data) == []


SETUP_200 = """
from rosterdrop.districts.models import District
from rosterdrop.intake.models import Login
key = open({key!r}).read()
for n in range(200):
    d = District.objects.create(slug=f"d{{n:03}}", name=f"D{{n}}", format="oneroster-1.1")
    login = Login(district=d, name=f"d{{n:03}}")
    login.add_public_key(key)
    login.save()
"""


@pytest.mark.slow
def test_200_concurrent_sftp_uploads_are_each_imported_once(make_server, tmp_path):
    """200 districts upload at once with OpenSSH's sftp (40 at a time): none is lost."""
    from concurrent.futures import ThreadPoolExecutor

    orgs = tmp_path / "orgs"
    orgs.mkdir()
    manifest = (SCHOOL_SMALL / "manifest.csv").read_text()
    sent = ("academicSessions", "classes", "courses", "demographics", "enrollments", "users")
    for name in sent:
        manifest = manifest.replace(f"file.{name},bulk", f"file.{name},absent")
    zipped = tmp_path / "roster.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("manifest.csv", manifest)
        z.write(SCHOOL_SMALL / "orgs.csv", "orgs.csv")
    server = make_server(ROSTERDROP_SFTP_MAX_CONNECTIONS_PER_IP="64")
    server.cli("shell", "-c", SETUP_200.format(key=str(server.key) + ".pub"))

    def put(n: int) -> None:
        server.openssh(f"put {zipped} roster.zip\n", f"d{n:03}")

    with ThreadPoolExecutor(40) as pool:
        list(pool.map(put, range(200)))
    server.wait_for(
        lambda: len(server.query("select id from ingest_sync where status = 'applied'")) >= 200,
        300,
        "200 imports",
    )
    # Then 200 search indexes, built one after another after their syncs (ingest.index_builds):
    # ~20 s on an idle machine, over 60 s beside CI's other workers on two cores.
    server.wait_idle(300)
    uploads = server.uploads()
    assert len(uploads) == 200 and {u["status"] for u in uploads} == {"imported"}
    per_upload = server.query(
        "select upload_id, count(*) as n from ingest_sync_uploads group by upload_id"
    )
    assert len(per_upload) == 200 and {row["n"] for row in per_upload} == {1}
    assert len(server.syncs()) == 200
