import os
import shutil
import sys
import tempfile
from pathlib import Path

import django
import pytest
from hypothesis import settings as hypothesis_settings

# No time limit per example (hypothesis' default is 200 ms): the suite runs beside other work
# on shared machines, where an example's wall time says nothing (test_sftp_units' changed
# packet took 265 ms at load 30). Speed is measured in bench/, not by the tests.
hypothesis_settings.register_profile("rosterdrop", deadline=None)
hypothesis_settings.load_profile("rosterdrop")

# Fixtures shared across test files: the console's people and districts, real `serve`
# processes to drive with SFTP and FTPS clients, the browser that drives the console, an S3
# server, and two front ends behind HAProxy (their plain helpers are imported by name).
pytest_plugins = [
    "run_fixtures",
    "web_fixtures",
    "sftp_fixtures",
    "browser_fixtures",
    "s3_fixtures",
    "cluster_fixtures",
]


def _data_dir() -> str:
    """The run's data folder (ROSTERDROP_DATA_DIR, else a new temporary one), and in an xdist
    worker a folder of the worker's own inside it: the SQLite test database, kept rosters and
    uploads are named by primary keys, which every worker's test database hands out again."""
    run = os.environ.get("ROSTERDROP_DATA_DIR") or tempfile.mkdtemp(prefix="rosterdrop-test-")
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # set before a worker loads this file
    if not worker:
        return run
    own = Path(run) / worker
    own.mkdir(parents=True, exist_ok=True)
    return str(own)


# Settings read the data folder at import, so the settings module is named here, after the
# folder is chosen, and neither in pyproject's [tool.pytest.ini_options] nor left in the
# environment: pytest-django imports the settings it names there before this file runs (a run
# by hand wrote into ./var; xdist workers, which inherit the environment, shared one folder).
if "rosterdrop.settings" in sys.modules:
    raise pytest.UsageError(
        "Django's settings were read before tests/conftest.py chose the data folder: "
        "run pytest without DJANGO_SETTINGS_MODULE (or --ds) set"
    )
os.environ["ROSTERDROP_DATA_DIR"] = _data_dir()
os.environ["DJANGO_SETTINGS_MODULE"] = "rosterdrop.settings"
django.setup()  # pytest-django's pytest_configure then blocks the database, as it would have
del os.environ["DJANGO_SETTINGS_MODULE"]  # the commands tests start name it themselves

# Real files written by others, copied into the repository with their sources and licences
# (samples/SOURCES.md), so a clone anywhere runs the suite.
SAMPLES = Path(__file__).resolve().parent / "samples"
SCHOOL_SMALL = SAMPLES / "oneroster11-generated" / "school-small"
DISTRICT_LARGE = SAMPLES / "oneroster11-generated" / "district-large.zip"


# What a test asks for when it uses pytest-django's test database (by fixture or marker).
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "live_server"}


def pytest_addoption(parser):
    parser.addoption(
        "--database-tests-only",
        action="store_true",
        help="run only the tests that use the test database (scripts/test's PostgreSQL runs: "
        "the others do the same on any engine and ran on SQLite already)",
    )


def _uses_database(item: pytest.Item) -> bool:
    return bool(item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(item.fixturenames))


def _transactional(item: pytest.Item) -> bool:
    """As pytest-django tells it: such a test empties every table when it ends."""
    marker = item.get_closest_marker("django_db")
    if marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")):
        return True
    return bool((DATABASE_FIXTURES - {"db"}) & set(item.fixturenames))


def _turn(item: pytest.Item) -> int:
    """Where a test goes: the slow ones first, in pytest-django's order where it matters (a
    transactional test empties the tables, so it never goes before a test that expects them
    as the migrations left them: a slow one goes first among the transactional ones)."""
    slow = item.get_closest_marker("slow") is not None
    if _transactional(item):
        return 2 if slow else 3
    if slow:
        return 0
    return 1 if _uses_database(item) else 4


@pytest.hookimpl(trylast=True)  # after pytest-django's order: database, transactional, none
def pytest_collection_modifyitems(config, items):
    """--database-tests-only, then the slow tests first: the last minutes of an xdist run are
    then short tests on every worker, not a chain of slow ones on one (scripts/test has xdist
    hand them out one at a time: --maxschedchunk 1)."""
    if config.getoption("--database-tests-only"):
        kept = [item for item in items if _uses_database(item)]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if not _uses_database(i)])
            items[:] = kept
    items.sort(key=_turn)  # stable: each group in the order it had


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings, django_db_keepdb, run, request):
    """On PostgreSQL, pytest-django's test databases named after the run too (test_NAME_RUN_gwN):
    named test_NAME_gwN, two runs at once on one server (CI machines sharing one, sessions on
    one machine) took the same ones, the second dropping the first's. In xdist workers each is a
    copy of the run's migrated template (CREATE DATABASE ... TEMPLATE), not a migrate of its own
    (~4-5 s of CPU and PostgreSQL's own per worker); pytest-django's migrate then finds nothing
    to do. Left as pytest-django names them with --reuse-db, which keeps them for the next run."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql" or django_db_keepdb:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    test = database.setdefault("TEST", {})
    test["NAME"] = "_".join(filter(None, [f"test_{database['NAME']}", run.name, worker]))
    if worker:
        test["TEMPLATE"] = request.getfixturevalue("postgres_template")


@pytest.fixture(autouse=True)
def heartbeat_stopped():
    """A sync a test starts starts this process's heartbeat thread: it stops with the test. Left
    beating, it failed in the tests after ("sync heartbeat failed": pytest-django refuses the
    database to a test that did not ask for it) and once the test databases were dropped."""
    yield
    if "rosterdrop.ingest.states" in sys.modules:
        from rosterdrop.ingest import states

        states.stop_beating()


@pytest.fixture(autouse=True)
def job_queue_emptied(request, django_db_blocker):
    """After a transactional test on PostgreSQL, procrastinate's jobs go too: Django's flush
    empties only the tables of managed models, and procrastinate's are not, so a job one test
    queued (a district's import, a sync, an index build) was found by the next test that
    counts the queue on the same worker (CI failed so, once the slow tests went first)."""
    yield
    if not _transactional(request.node):
        return
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM procrastinate_jobs")


@pytest.fixture
def school(tmp_path) -> Path:
    """A writable copy of the small OneRoster 1.1 school, to break or change."""
    folder = tmp_path / "school"
    shutil.copytree(SCHOOL_SMALL, folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


@pytest.fixture
def district(db):
    """Springfield, new in the database and with an empty folder: its rows go with each
    test's transaction, its folder on disk would stay for the worker's next test (a file
    test_retention left there showed in test_shared_folder's listing)."""
    from rosterdrop.districts.models import District
    from rosterdrop.intake.folder import district_root, staging_dir

    for folder in (district_root("springfield"), staging_dir("springfield")):
        shutil.rmtree(folder, ignore_errors=True)
    return District.objects.create(slug="springfield", name="Springfield", format="oneroster-1.1")


@pytest.fixture
def served(district):
    """The district with the small school imported."""
    from rosterdrop.ingest.syncs import import_path

    sync = import_path(district, SCHOOL_SMALL)
    assert sync.status == "applied"
    return district
