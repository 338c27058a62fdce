"""The suite's own options (conftest.py), as scripts/test uses them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collected(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line.split("::")[1] for line in done.stdout.splitlines() if "::" in line]


def test_database_tests_only_keeps_the_tests_that_use_the_test_database():
    """scripts/test's PostgreSQL runs: a test that uses no test database (by fixture or mark)
    does the same on any engine and ran on SQLite already."""
    every = collected("tests/test_queue.py", "-m", "not slow")
    kept = collected("tests/test_queue.py", "-m", "not slow", "--database-tests-only")
    # Left out only the test that starts the command on SQLite; kept in their order: one using
    # the `district` fixture (-> db) and one with the django_db mark among them.
    assert [name for name in every if name not in kept] == [
        "test_worker_and_no_worker_need_postgresql"
    ]
    assert kept == [name for name in every if name in kept]
    assert "test_an_upload_a_running_sync_holds_is_not_waiting" in kept  # district -> db
    assert "test_a_district_has_one_job_waiting_however_many_uploads" in kept  # django_db mark
