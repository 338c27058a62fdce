"""The suite's own options (conftest.py), as scripts/test uses them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def collected(*args: str) -> list[str]:
    """The names of the tests pytest collects with `args`, in the order they would run."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line.split("::", 1)[1] for line in done.stdout.splitlines() if "::" in line]


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


def test_the_slow_tests_run_first_and_a_transactional_test_never_before_a_database_one():
    """xdist hands the tests out in this order (scripts/test: one at a time), so the slow ones
    start first and the run ends on short ones. A transactional test empties the tables when it
    ends: it still never comes before a test that expects them as the migrations left them."""
    files = ("tests/test_queue.py", "tests/test_holds.py", "tests/test_resent.py")
    every = collected(*files)
    queue, resent = ((ROOT / files[at]).read_text() for at in (0, 2))
    # test_queue's slow tests (their servers use no test database), as their marks say.
    marked = re.findall(r"^@pytest\.mark\.slow\n(?:@.*\n)*def (test_\w+)", queue, re.MULTILINE)
    slow = [name for name in every if name.split("[")[0] in marked]
    # test_resent's: transaction=True, none slow, none parametrized.
    transactional = re.findall(r"^def (test_\w+)", resent, re.MULTILINE)
    last = "test_worker_and_no_worker_need_postgresql"  # neither slow nor a test database
    database = [name for name in every if name not in {*slow, *transactional, last}]
    assert slow and transactional and database
    assert every == [*slow, *database, *transactional, last]


@pytest.mark.slow
def test_each_run_and_worker_has_a_data_folder_of_its_own():
    """Settings read the data folder when Django starts: a run by hand (no ROSTERDROP_DATA_DIR)
    gets a temporary one, not the checkout's var/, and each xdist worker its own inside the
    run's (the test databases of workers hand out the same primary keys, which name files)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "ROSTERDROP_DATA_DIR" and not k.startswith("PYTEST_XDIST_")  # run in a worker
    }
    for workers in ("0", "1"):  # one test: a second worker would start and run nothing
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers,
             f"{__file__}::test_settings_use_the_data_folder_of_this_process"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout


def test_settings_use_the_data_folder_of_this_process(settings):
    """(Run by the test above, and by every run.)"""
    data = Path(os.environ["ROSTERDROP_DATA_DIR"]).resolve()
    assert data == settings.DATA_DIR
    assert not data.is_relative_to(ROOT)
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        assert database["TEST"]["NAME"].startswith(f"{data}/")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    assert data.name == worker if worker else not data.name.startswith("gw")
