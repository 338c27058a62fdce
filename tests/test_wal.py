"""SQLite's checkpoint of an import's pages runs in the build after the sync, not in the commit
the district waits for (roster/wal.py): nothing committed is lost when the process dies right
after its commit, and readers see the committed roster (or the state they began in) while the
checkpoint runs. Real `rosterdrop` processes on a copy of the SFTP template's data folder."""

import shutil
import signal
import sqlite3
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from sftp_fixtures import DISTRICT_LARGE, ROSTERDROP, base_env

# A district whose import writes more than SQLite's 1000 pages (4 MB) of WAL: its commit
# would checkpoint them (school-small's stays under, and never did).
with zipfile.ZipFile(DISTRICT_LARGE) as archive:
    USERS = archive.read("users.csv").count(b"\n") - 1
ACTIVE_USERS = "select count(*) from roster_user where status = 'active'"


@pytest.fixture
def data(sftp_template, tmp_path) -> Path:
    folder = tmp_path / "data"
    shutil.copytree(sftp_template[0], folder)
    return folder


def database(data: Path) -> Path:
    return data / "rosterdrop.sqlite3"


def reader(data: Path) -> sqlite3.Connection:
    """A read-only connection: it reads the WAL, and never checkpoints, not even as it closes
    (a read-write one closing last would)."""
    return sqlite3.connect(f"file:{database(data)}?mode=ro", uri=True, isolation_level=None)


def active_users(data: Path) -> int:
    with reader(data) as db:
        return db.execute(ACTIVE_USERS).fetchone()[0]


def in_file_alone(data: Path, tmp_path: Path) -> int:
    """The active users the database file holds by itself: a copy of it without its WAL."""
    copy = tmp_path / "alone.sqlite3"
    shutil.copyfile(database(data), copy)
    try:
        with sqlite3.connect(copy) as db:
            return db.execute(ACTIVE_USERS).fetchone()[0]
    finally:
        for path in tmp_path.glob("alone.sqlite3*"):
            path.unlink()


def rosterdrop(data: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROSTERDROP, *args],
        env={**base_env(data), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def wait_paused(flag: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert proc.poll() is None, "the process ended before it reached the pause"
        assert time.monotonic() < deadline, "the pause was never reached"
        time.sleep(0.05)


def test_an_import_killed_right_after_its_commit_loses_nothing(data, tmp_path):
    flag = tmp_path / "paused"
    env = {**base_env(data), "ROSTERDROP_PAUSE_AT": "committed"}
    env["ROSTERDROP_PAUSE_FILE"] = str(flag)
    cli = subprocess.Popen(
        [ROSTERDROP, "import", str(DISTRICT_LARGE), "--district", "alpha"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_paused(flag, cli)
        # Committed, and its pages only in the WAL: the commit did not checkpoint them.
        assert in_file_alone(data, tmp_path) == 0
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=20)
    assert cli.returncode == -signal.SIGKILL
    with reader(data) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert db.execute(ACTIVE_USERS).fetchone()[0] == USERS
        statuses = db.execute("select status from ingest_sync").fetchall()
    assert statuses == [("applied",)]
    # The build after the sync copies them into the database file.
    rosterdrop(data, "search-index", "build")
    assert in_file_alone(data, tmp_path) == USERS
    assert active_users(data) == USERS


def test_an_import_leaves_its_checkpoint_to_the_build_after_it(data, tmp_path):
    out = rosterdrop(data, "import", str(DISTRICT_LARGE), "--district", "alpha", "--json").stdout
    assert '"status": "applied"' in out
    # The process ended without copying its pages into the file (nor deleting the WAL).
    assert database(data).with_suffix(".sqlite3-wal").stat().st_size > 0
    assert in_file_alone(data, tmp_path) == 0
    assert active_users(data) == USERS
    built = rosterdrop(data, "search-index", "build").stdout
    assert "s checkpoint" in built
    assert in_file_alone(data, tmp_path) == USERS


def test_readers_see_their_state_while_the_checkpoint_runs(data, tmp_path):
    """A reader that began before the import keeps the roster it began with, one that began
    after it sees the import's; the checkpoint waits for neither (PASSIVE), and copies what
    the older reader still reads once it is done."""
    before = reader(data)
    before.execute("BEGIN")
    assert before.execute(ACTIVE_USERS).fetchone()[0] == 0
    rosterdrop(data, "import", str(DISTRICT_LARGE), "--district", "alpha")
    after = reader(data)
    after.execute("BEGIN")
    assert after.execute(ACTIVE_USERS).fetchone()[0] == USERS
    started = time.monotonic()
    rosterdrop(data, "search-index", "build")
    assert time.monotonic() - started < 30  # SQLite's busy timeout: nobody waited for a lock
    assert before.execute(ACTIVE_USERS).fetchone()[0] == 0
    assert after.execute(ACTIVE_USERS).fetchone()[0] == USERS
    # The older reader's state is still the file's: the import's pages were not copied over it.
    assert in_file_alone(data, tmp_path) == 0
    before.execute("COMMIT")
    before.close()
    assert after.execute(ACTIVE_USERS).fetchone()[0] == USERS
    after.execute("COMMIT")
    after.close()
    rosterdrop(data, "search-index", "build")
    assert in_file_alone(data, tmp_path) == USERS
    assert active_users(data) == USERS
