"""Staging: many new records at once, written to a file of their own, for SQLite's bulk path.

executemany binds every value from Python: 6.8M new records took 35 s, about twice what the
sqlite3 CLI takes to load the same CSV files. Instead, ADBC's SQLite driver writes the rows
from Arrow in C, with the GIL released, into a private SQLite file; the main connection then
attaches that file and copies its rows with one INSERT ... SELECT (5M enrollments: about 6 s
to stage and 6 s to copy, and the staging of one part overlaps the copy of the one before).

The driver brings its own SQLite library. Two libraries must never have the same file open
at once: each keeps its own POSIX locks, and a close in one drops the other's. So a staged
file is written and closed by the driver before the main connection opens it, nothing else
ever opens it, and the driver never opens the main database.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc
import polars as pl

from rosterdrop.timing import timed

TABLE = "staged"
# The main connection's name for an attached staged file: a prefix and a number.
ALIAS = "rd_staged_"


@dataclass(frozen=True)
class Staged:
    """Rows in a staged file, under TABLE, with these columns."""

    path: Path
    rows: int
    columns: tuple[str, ...]


@timed("db staged (thread)", batch=True)
def stage(frame: pl.DataFrame, folder: Path) -> Staged:
    """Write `frame` to a new staged file in `folder` (text and integer columns)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix="staged-", suffix=".sqlite3")
    os.close(fd)
    try:
        with adbc.connect(name, autocommit=True) as db, db.cursor() as cur:
            # A scratch file: no journal, no syncs; it is deleted with the import's folder.
            cur.execute("PRAGMA journal_mode = OFF")
            cur.fetchall()
            cur.execute("PRAGMA synchronous = OFF")
            cur.adbc_ingest(TABLE, frame.to_arrow(), mode="create")
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Staged(Path(name), frame.height, tuple(frame.columns))
