"""The database's part of a backup: one consistent copy taken while the service runs.

SQLite: the online backup API (sqlite3 Connection.backup) copies the database as of one
moment, whatever other connections write meanwhile. PostgreSQL: `pg_dump` in a snapshot
exported from a REPEATABLE READ transaction, and what the data folder must hold is read in
that same transaction, so the dump and the files it names agree exactly.
"""

import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.db import connection, transaction

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.roster.models import RosterToken

SQLITE_FILE = "database.sqlite3"
POSTGRESQL_FILE = "database.pgdump"


@dataclass
class Held:
    """What the copied database refers to in the data folder."""

    stored_paths: list[str]  # raw uploads, relative to the data folder
    districts: list[tuple[int, str, int]]  # id, slug, roster token (whose snapshots match)


def dump(folder: Path) -> tuple[str, Held]:
    """Write the database into `folder`; the file's name and what the copy refers to."""
    if connection.vendor == "sqlite":
        return SQLITE_FILE, _dump_sqlite(folder / SQLITE_FILE)
    if connection.vendor == "postgresql":
        return POSTGRESQL_FILE, _dump_postgresql(folder / POSTGRESQL_FILE)
    # rosterdrop runs on these two engines only (settings accept no other): say so in one line.
    raise RuntimeError(f"rosterdrop backs up SQLite and PostgreSQL, not {connection.vendor}")


def load(path: Path) -> None:
    """Replace the configured database's contents with a dump made by `dump`."""
    connection.close()  # nothing of ours holds a lock while it is replaced
    if path.name == SQLITE_FILE and connection.vendor == "sqlite":
        _copy_sqlite(path, connection.settings_dict["NAME"])
    elif path.name == POSTGRESQL_FILE and connection.vendor == "postgresql":
        dsn, env = _libpq()
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
              "--exit-on-error", "--dbname", dsn, str(path)], env)  # fmt: skip
    else:
        raise ValueError(f"{path.name} cannot be restored into {connection.vendor}")
    connection.close()


def _held(cursor) -> Held:
    cursor.execute(
        f"SELECT stored_path FROM {Upload._meta.db_table} WHERE stored_path <> '' ORDER BY id"
    )
    paths = [row[0] for row in cursor.fetchall()]
    cursor.execute(
        f"SELECT d.id, d.slug, t.token FROM {District._meta.db_table} d"
        f" JOIN {RosterToken._meta.db_table} t ON t.district_id = d.id ORDER BY d.id"
    )
    return Held(paths, [(int(i), slug, int(t)) for i, slug, t in cursor.fetchall()])


def _copy_sqlite(source: Path | str, target: Path | str) -> None:
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)  # all pages in one step: one moment, even while others write
    finally:
        src.close()
        dst.close()


def _dump_sqlite(out: Path) -> Held:
    _copy_sqlite(connection.settings_dict["NAME"], out)
    copy = sqlite3.connect(out)
    try:
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        return _held(copy.cursor())
    finally:
        copy.close()


def _dump_postgresql(out: Path) -> Held:
    dsn, env = _libpq()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        _run(["pg_dump", "--format=custom", "--no-owner", f"--snapshot={snapshot}",
              f"--file={out}", "--dbname", dsn], env)  # fmt: skip
        return _held(cursor)


def _libpq() -> tuple[str, dict[str, str]]:
    """The connection's settings as a libpq connection string; the password in the
    environment, not on a command line others can read."""
    from psycopg.conninfo import make_conninfo

    s = connection.settings_dict
    params = {k: str(v) for k, v in (s.get("OPTIONS") or {}).items() if isinstance(v, str | int)}
    params.update(
        {k: str(v) for k, v in (("host", s["HOST"]), ("port", s["PORT"]), ("user", s["USER"])) if v}
    )
    env = dict(os.environ)
    if s["PASSWORD"]:
        env["PGPASSWORD"] = s["PASSWORD"]
    return make_conninfo(dbname=s["NAME"], **params), env


def _run(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{command[0]} failed: {done.stderr.strip()}")
