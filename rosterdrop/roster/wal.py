"""SQLite's checkpoint of a sync's pages, run after the sync instead of in its commit.

In WAL mode a commit appends the transaction's pages to the -wal file; a checkpoint copies them
into the database file and syncs both. SQLite runs one itself in the commit that leaves the WAL
over `wal_autocheckpoint` pages (1000), and again when the last connection to the file closes.
A first import at `huge` writes ~1.9 GB of pages: its commit spent 7.2 s (5.1 s of CPU) copying
them (bench/README.md, sqlfirst22) while the district waited, its roster already committed.

So the applying transaction calls `later` before its commit: from then on its connection
leaves the checkpoint (wal_autocheckpoint 0, none when it closes), and the build after the
sync (ingest/index_builds.py, which `serve`'s worker runs after each pass, and
`rosterdrop search-index build`) runs it first, with `now`: PASSIVE (readers and writers go on;
a reader of an older state keeps the frames it reads, which the next checkpoint copies) and
SQLite's own behaviour given back to that connection. A new connection (Django's close after
each pass or request, another process) behaves as SQLite's default: its first commit over 1000
pages of WAL checkpoints, so nothing is left behind for long if no build runs.

The guarantee does not change: rosterdrop runs SQLite with synchronous=NORMAL (settings.py),
under which a commit is durable once written to the WAL against the process dying (the next
connection reads the WAL back: tests/test_wal.py kills a real `rosterdrop import` right after
its commit), and a power loss or an OS crash may roll back the last commits, never part of
one; they are synced to disk by the checkpoint. Only the moment of that sync moves, for the
syncs whose commit checkpointed (those writing over 1000 pages), to the build after them.
"""

import ctypes
import functools
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from django.db import connection

from rosterdrop.timing import timed

AUTOCHECKPOINT = 1000  # SQLite's default, which rosterdrop does not change
NO_CKPT_ON_CLOSE = 1006  # SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE (SQLite 3.16)


def later(cur: Any) -> None:
    """Inside the applying transaction, before its commit (SQLite; nothing on PostgreSQL,
    whose checkpoints are its server's): its pages stay in the WAL until `now`."""
    if connection.vendor != "sqlite":
        return
    cur.execute("PRAGMA wal_autocheckpoint = 0")
    _checkpoint_on_close(connection.connection, False)


@timed("checkpoint")
def now() -> None:
    """Copy what the WAL holds into the database file (PASSIVE: nobody waits for it), and let
    this connection checkpoint again as SQLite does (outside a transaction: a checkpoint cannot
    run inside one; there, only the latter)."""
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cur:
        if not connection.in_atomic_block:
            cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cur.fetchall()
        cur.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT}")
    _checkpoint_on_close(connection.connection, True)


def _checkpoint_on_close(raw: sqlite3.Connection, checkpoint: bool) -> bool:
    """Whether SQLite checkpoints when this connection closes last (its default: yes); whether
    that could be set. Python 3.12 sets it; 3.11 has no call for it, so SQLite's own
    sqlite3_db_config is called on the connection's handle (`_handle`), or nothing is done
    (the checkpoint then runs as the process ends, as before)."""
    setconfig = getattr(raw, "setconfig", None)
    if setconfig is not None:  # Python 3.12+
        setconfig(NO_CKPT_ON_CLOSE, not checkpoint)
        return True
    found = _handle(raw)
    if found is None:
        return False
    library, handle = found
    value = ctypes.c_int(-1)
    flag = ctypes.c_int(0 if checkpoint else 1)
    done = library.sqlite3_db_config(
        ctypes.c_void_p(handle), ctypes.c_int(NO_CKPT_ON_CLOSE), flag, ctypes.byref(value)
    )
    return bool(done == 0 and value.value == flag.value)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The shared SQLite library this process's sqlite3 module runs on (the one mapped as
    libsqlite3, at the version the module reports), or None."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return None  # _handle knows 3.11's connection object only; 3.12 has setconfig
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "/libsqlite3.so" in line}
    if len(paths) != 1:
        return None
    library = ctypes.CDLL(paths.pop())
    library.sqlite3_libversion.restype = ctypes.c_char_p
    if library.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None
    library.sqlite3_db_filename.restype = ctypes.c_char_p
    library.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.sqlite3_db_config.restype = ctypes.c_int
    return library


def _handle(raw: sqlite3.Connection) -> tuple[ctypes.CDLL, int] | None:
    """The library and the `sqlite3 *` of a Python 3.11 sqlite3 connection: CPython's
    pysqlite_Connection holds it first after the object header. Taken only if that handle
    names the database file this connection has open."""
    library = _library()
    if library is None or not isinstance(raw, sqlite3.Connection):
        return None
    handle = ctypes.c_void_p.from_address(id(raw) + object.__basicsize__).value
    if not handle:
        return None
    named = library.sqlite3_db_filename(handle, b"main")
    expected = connection.settings_dict["NAME"]
    if not named or os.path.realpath(named.decode()) != os.path.realpath(str(expected)):
        return None
    return library, handle
