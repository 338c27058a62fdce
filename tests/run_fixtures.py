"""What the xdist workers of one pytest run make once and share: a name of the run's own and a
folder, the data folders and databases each worker used to migrate for itself (~4-5 s of CPU
each, and PostgreSQL's own), and the PostgreSQL databases to drop when the run ends.

The run's name is random: two checkouts running the suite at once on one PostgreSQL server (CI
machines, or sessions on one machine) name their databases apart; a name made of a pid or of
the worker alone (gw0) was the same in both, and the second run's DROP ... WITH (FORCE) ended
the first's connections.
"""

import fcntl
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
RUN = pytest.StashKey["Run"]()


@dataclass(frozen=True)
class Run:
    """The run's name (a-z0-9, for database names) and the folder its workers share."""

    name: str
    folder: Path

    def once(self, what: str, make: Callable[[Path], None]) -> Path:
        """`folder/what`, made by `make(path)` in the first worker that asks for it (the others
        wait for it), never again in this run."""
        done = self.folder / what
        with open(self.folder / f"{what}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                making = self.folder / f"{what}.making"
                shutil.rmtree(making, ignore_errors=True)  # a worker's failed try
                make(making)
                making.rename(done)
        return done

    def database(self, what: str, make: Callable[[str], None]) -> str:
        """The name of a PostgreSQL database made once per run by `make(name)`, dropped at the
        run's end (pytest_sessionfinish of the controller), even if `make` fails."""

        def made(path: Path) -> None:
            name = f"{what}_{self.name}"
            with open(self.folder / "databases", "a") as listed:
                listed.write(name + "\n")
            make(name)
            path.write_text(name)

        return self.once(what, made).read_text()

    def database_name(self, label: str) -> str:
        """The name of a test's own database: `label` (cut), the run's name and this process's
        id (a test of the same name may run at once in another worker or run)."""
        name = f"rd_{label[:40]}_{self.name}_{os.getpid()}".lower()
        return "".join(c if c.isalnum() else "_" for c in name)


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin's
def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        folder = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
        config.stash[RUN] = Run(secrets.token_hex(4), folder)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist's controller tells each worker the run's name and folder."""
    run = node.config.stash[RUN]
    node.workerinput["rosterdrop_run"] = (run.name, str(run.folder))


def this_run(config: pytest.Config) -> Run:
    if hasattr(config, "workerinput"):
        name, folder = config.workerinput["rosterdrop_run"]
        return Run(name, Path(folder))
    return config.stash[RUN]


@pytest.fixture(scope="session")
def run(request) -> Run:
    return this_run(request.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (or the one process) drops the run's shared databases, once every
    worker has ended."""
    if hasattr(session.config, "workerinput"):
        return
    listed = this_run(session.config).folder / "databases"
    if listed.exists():
        for name in listed.read_text().split():
            drop_database(name)


def create_database(name: str, template: str | None = None) -> None:
    """A new PostgreSQL database (dropped first if a killed run left it), empty or a copy."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def drop_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
