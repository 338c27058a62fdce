import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Fixtures shared across test files: the console's people and districts, real `serve`
# processes to drive with SFTP and FTPS clients, the browser that drives the console, an S3
# server, and two front ends behind HAProxy (their plain helpers are imported by name).
pytest_plugins = [
    "web_fixtures",
    "sftp_fixtures",
    "browser_fixtures",
    "s3_fixtures",
    "cluster_fixtures",
]

# Settings read the data folder at import: give the test run its own before Django starts.
os.environ.setdefault("ROSTERDROP_DATA_DIR", tempfile.mkdtemp(prefix="rosterdrop-test-"))

# Real files written by others, copied into the repository with their sources and licences
# (samples/SOURCES.md), so a clone anywhere runs the suite.
SAMPLES = Path(__file__).resolve().parent / "samples"
SCHOOL_SMALL = SAMPLES / "oneroster11-generated" / "school-small"
DISTRICT_LARGE = SAMPLES / "oneroster11-generated" / "district-large.zip"


@pytest.fixture(autouse=True)
def heartbeat_stopped():
    """A sync a test starts starts this process's heartbeat thread: it stops with the test. Left
    beating, it failed in the tests after ("sync heartbeat failed": pytest-django refuses the
    database to a test that did not ask for it) and once the test databases were dropped."""
    yield
    if "rosterdrop.ingest.states" in sys.modules:
        from rosterdrop.ingest import states

        states.stop_beating()


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
    from rosterdrop.districts.models import District

    return District.objects.create(slug="springfield", name="Springfield", format="oneroster-1.1")
