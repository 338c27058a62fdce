"""Bulk reads and writes of the roster tables, column-wise, on Django's own connection.

The ORM is for everything else; the roster moves in bulk: a district's (key, hash, status)
snapshot is read in one query per entity, and only changed records are written, with each
database's bulk path (COPY on PostgreSQL; on SQLite executemany, or for many new records a
staged file copied in C, see staging.py) inside the caller's transaction.
"""

import io
import queue
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from django.db import connection, models, transaction
from polars._typing import PolarsDataType

from rosterdrop.roster import staging
from rosterdrop.roster.models import (
    BYTE_ORDER,
    ENTITIES,
    IN_ORDER,
    LOOKUP_INDEXES,
    MODELS,
    RosterToken,
    Status,
    new_roster_token,
)
from rosterdrop.roster.natural import SEPARATOR, hash_joined, key_hash
from rosterdrop.roster.schema import FIELDS, HASH, KEY, KEYHASH, METADATA, NATURAL_KEYS
from rosterdrop.roster.staging import Staged
from rosterdrop.timing import timed

# Entity and status as enums: a byte each instead of a string on millions of rows.
SNAPSHOT_SCHEMA: dict[str, PolarsDataType] = {
    "entity": pl.Enum(ENTITIES),
    "_key": pl.String,
    "_keyhash": pl.UInt64,  # natural.key_hash of _key
    "_hash": pl.Int64,
    "status": pl.Enum(Status.values),
    "_natural": pl.Int64,  # natural.natural_hash of the natural key fields, if the entity has one
    "_rowid": pl.Int64,  # the record's row ID in its table (ROW_ID), or null if not known
}
# A record's row ID, as the snapshot knows it (null: not known, e.g. a record a sync added
# after apply's plan was made). A record keeps its row ID for good: a removal marks it, a
# rename rewrites its source ID in place. So an update or removal seeks it by ID, through the
# primary key (in the heap's order), not by source ID through the unique key (~3 times as many
# leaves, sought at random): at `huge`'s 1% change, 99k removals 118k -> 94k pages read
# (bench/README.md, pg1pct28 and pgrowid29).
ROW_ID = "_rowid"
# A raw DB-API cursor: psycopg's (COPY) on PostgreSQL, sqlite3's otherwise; which one is
# decided by the connection's vendor, not by its type.
Cursor = Any
INSERT_ROWS = 20_000
COPY_ROWS = 100_000
FETCH_ROWS = 100_000
# The keys and row IDs of records written (write_records, rename_records).
RECORD_IDS: dict[str, PolarsDataType] = {KEY: pl.String, "_id": pl.Int64}


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def ids_appended() -> bool:
    """Whether an entity's new records of a sync take the IDs after the table's highest, one
    after another, so that its created records are known by the highest ID before and after
    (`last_id`): SQLite's rowids, its one writer appending. PostgreSQL's come from a sequence
    other sessions draw from too (store.Loader knows a first import's)."""
    return not _is_postgres()


def last_id(cur: Cursor, entity: str) -> int:
    """The entity's highest row ID (0 for an empty table)."""
    cur.execute(f"SELECT MAX(id) FROM {table(entity)}")
    return int(cur.fetchone()[0] or 0)


def stages_new_records() -> bool:
    """Whether many new records are better written through staged files (SQLite's case:
    PostgreSQL's COPY is its bulk path already)."""
    return not _is_postgres()


def table(entity: str) -> str:
    return MODELS[entity]._meta.db_table


def _q(name: str) -> str:
    """A column name as SQL: the canonical fields keep their OneRoster case."""
    return f'"{name}"'


# SQLite's page cache for the temporary tables (`_keyed_table`: the records an apply's statements
# look up) in a bulk_connection; their own, apart from the roster's, and 2 MB unless set. Past
# it their pages went to a temporary file and back: at `huge`'s 1% change 8,308 pages written
# and ~8.6k read back (a window of 50k changed enrollments with every field is ~13 MB),
# bench/README.md sqlpages30. A cap, not an allocation: pages are taken as the tables fill, and
# given back when the transaction ends (the setting back to what it was).
TEMP_CACHE_KB = 64_000


@contextmanager
def bulk_connection() -> Iterator[Cursor]:
    """One transaction on Django's connection; yields a raw DB-API cursor."""
    if _is_postgres():
        with transaction.atomic(), connection.cursor() as wrapper:
            yield wrapper.cursor
        return
    try:
        with transaction.atomic(), connection.cursor() as wrapper:
            # Pages stay in memory between reading a changed record's old data and updating
            # it (measured: old data 5.0 s -> 1.6 s for 1% of 5M enrollments). Given back after
            # the transaction: the connection would otherwise keep 256 MB it no longer needs.
            wrapper.execute("PRAGMA cache_size")
            (default,) = wrapper.fetchone()
            wrapper.execute("PRAGMA temp.cache_size")
            (temp,) = wrapper.fetchone()
            wrapper.execute("PRAGMA cache_size = -256000")
            wrapper.execute(f"PRAGMA temp.cache_size = -{TEMP_CACHE_KB}")
            try:
                yield wrapper.cursor
            finally:
                wrapper.execute(f"PRAGMA cache_size = {int(default)}")
                wrapper.execute(f"PRAGMA temp.cache_size = {int(temp)}")
    finally:
        if not connection.in_atomic_block:
            _detach_staged()


def _detach_staged() -> None:
    """Let go of the staged files the transaction copied from (SQLite refuses to detach a
    file a transaction has read until it ends)."""
    with connection.cursor() as cur:
        cur.execute("PRAGMA database_list")
        for _, name, path in cur.fetchall():
            if name.startswith(staging.ALIAS):
                cur.execute(f"DETACH DATABASE {name}")
                with suppress(FileNotFoundError):
                    Path(path).unlink()


# SQLite's page cache while an apply rewrites records where they are (no staged files: a
# change, not a load). Its updates, removals and the gaps' reads after them come back to the
# pages the writes before dirtied, which 256 MB spills to the WAL and reads back: at `huge`'s
# 1% change a bigger cache took apply 22.2 -> 14.0 s of CPU (bench/README.md, apply20). A load
# appends in key order and never comes back to a page. How big: `cache_for_rewrites`.
REWRITE_CACHE_KB = 768_000


def cache_for_rewrites(cur: Cursor) -> None:
    """Inside bulk_connection, before an apply that rewrites records in place (SQLite).

    The cache is most of the apply's memory, beside what the process holds after the read
    (Python, the libraries and the plan: ~300 MB at `huge`) and a window's frames in two
    threads (~250 MB). It fills with the pages the transaction touches, to its end (the gaps
    counted after apply too): a 1% change's removed enrollments are spread over the table,
    so that is much of the roster, ~700 MB at `large`, over 1 GB at `huge`. Capped, the
    apply's peak is about those three, whatever the district's size, and its read's (which
    grows with every row) is the import's: 1 GB made the apply the peak at `huge`, 1460-1490
    MB against the 1.5 GB target; 768 MB leaves it ~1.2 GB, under the read's ~1.3 GB, at the
    same CPU (apply 6.5-7.2 s with 1 GB, 6.7-7.3 with 768 MB, 7.5 with 640, 8.2 with 512:
    bench/README.md, cache21). At `large` it is ~1.0 GB, the read's ~0.7."""
    if not _is_postgres():
        cur.execute(f"PRAGMA cache_size = -{REWRITE_CACHE_KB}")


@contextmanager
def one_state() -> Iterator[None]:
    """A read-only transaction on one committed state of the database, for a read of many
    statements that must agree with each other; within one already, that one. Nothing may
    be written inside it."""
    if connection.in_atomic_block:  # already one transaction (a test's): one state
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cur:
            # Every statement of the transaction sees the snapshot of its first one.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    # SQLite: Django's atomic would BEGIN IMMEDIATE and hold the write lock (settings:
    # transaction_mode) for the whole read; a deferred transaction only reads, and in WAL
    # mode it sees the state of its first read to its end while imports go on writing.
    connection.ensure_connection()
    if connection.connection.in_transaction:
        yield
        return
    with connection.cursor() as cur:
        cur.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            cur.execute("COMMIT")


def sql_time(moment: datetime) -> str:
    """A timestamp literal the way Django stores it on this database."""
    return str(connection.ops.adapt_datetimefield_value(moment))


def json_value(column: str) -> str:
    return f"CAST({column} AS jsonb)" if _is_postgres() else column


def _param() -> str:
    return "%s" if _is_postgres() else "?"


def _literal(value: object) -> str:
    return str(int(value)) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class Formatted:
    """Rows as the CSV that PostgreSQL's COPY reads (`formatted`), made before their turn to
    be written: apply formats a window of new records in its thread while the server copies
    the one before (polars' CSV of 1M enrollments: ~1.2 s of CPU, which otherwise the server
    waits for, statement after statement)."""

    columns: tuple[str, ...]
    parts: tuple[bytes, ...]


def formats_new_records() -> bool:
    """Whether new records are written from `Formatted` CSV (PostgreSQL's COPY)."""
    return _is_postgres()


@timed("db csv", batch=True)
def formatted(frame: pl.DataFrame, constants: dict[str, object] | None = None) -> Formatted:
    """A frame's rows, and `constants` in other columns, as CSV for COPY. Written by polars:
    no Python work per row. Strings are always quoted so that "" stays an empty string and
    only a missing value is NULL."""
    frame = frame.with_columns(pl.lit(v).alias(c) for c, v in (constants or {}).items())
    parts = []
    for part in frame.iter_slices(COPY_ROWS):
        text = io.BytesIO()
        part.write_csv(text, include_header=False, quote_style="non_numeric")
        parts.append(text.getvalue())
    return Formatted(tuple(frame.columns), tuple(parts))


@timed("db insert", batch=True)
def _load(
    cur: Cursor,
    table: str,
    rows: pl.DataFrame | Formatted,
    constants: dict[str, object] | None = None,
) -> None:
    """Append rows with the database's bulk path; `constants` fill other columns.

    PostgreSQL: COPY in CSV (`formatted`, unless it already is). SQLite: executemany of one
    prepared INSERT, the constants written into it (measured faster than shipping the rows as
    JSON for SQLite to unpack).
    """
    if isinstance(rows, pl.DataFrame) and not rows.height:
        return
    if _is_postgres():
        if isinstance(rows, pl.DataFrame):
            rows = formatted(rows, constants)
        names = ", ".join(_q(c) for c in rows.columns)
        with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv)") as copy:
            for text in rows.parts:
                copy.write(text)
        return
    assert isinstance(rows, pl.DataFrame), "only PostgreSQL's writes are formatted"
    frame, constants = rows, constants or {}
    names = ", ".join(_q(c) for c in [*frame.columns, *constants])
    values = ["?"] * frame.width + [_literal(v) for v in constants.values()]
    insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join(values)})"
    for part in frame.iter_slices(INSERT_ROWS):
        # Columns to lists, zipped in C: iter_rows builds each tuple in polars' Python layer
        # (measured on 1M records: 3.6 s against 5.1 s for the whole insert).
        columns = (column.to_list() for column in part.get_columns())
        cur.executemany(insert, zip(*columns, strict=True))


@dataclass(frozen=True)
class Keyed:
    """A temporary table of listed keys (_keyed_table), and how many."""

    name: str
    rows: int


def _keyed_table(cur: Cursor, name: str, frame: pl.DataFrame, key: str = KEY) -> Keyed:
    """A temporary table holding `frame` (text and bigint columns), keyed by `key` (_key, or
    ROW_ID): the records a statement is to look up (not to be confused with staged files,
    staging.py).

    Its text is collated as the roster's source IDs are (`models.ByteOrdered`): a comparison
    of two collations takes the roster's, and the index on _key, in another, could not answer
    it (at `huge`'s 1% change, each updated record's correlated lookup of its new values
    scanned the whole keyed table: 24 s -> 327 s, bench/README.md pgfirst26)."""
    types: dict[PolarsDataType, str] = {pl.Int64: "BIGINT", pl.UInt32: "BIGINT"}
    text = f"TEXT COLLATE {_q(BYTE_ORDER)}" if _is_postgres() else "TEXT"
    cols = ", ".join(f"{_q(c)} {types.get(t, text)}" for c, t in frame.schema.items())
    # The key is unique (duplicates were dropped); declaring it lets joins use an index.
    cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"CREATE TEMPORARY TABLE {name} ({cols}, PRIMARY KEY ({_q(key)}))")
    # In key order: the joins then walk the roster's index in order, not at random.
    _load(cur, name, frame.sort(key))
    return Keyed(name, frame.height)


def snapshot(cur: Cursor, district_id: int) -> pl.DataFrame:
    """Every record of the district, entity after entity: entity, key, content hash, status,
    natural key hash and row ID."""
    fetched = {c: t for c, t in SNAPSHOT_SCHEMA.items() if c != KEYHASH}
    fetched["_natural"] = pl.String  # the fields joined, or null
    text = pl.col("_natural")
    hashed = pl.when(text.is_not_null()).then(hash_joined(text)).cast(pl.Int64).alias("_natural")
    parts = [pl.DataFrame(schema=SNAPSHOT_SCHEMA)]
    for entity in ENTITIES:
        cur.execute(
            f"SELECT '{entity}', sourced_id, content_hash, status, {_natural_sql(entity)}, id "
            f"FROM {table(entity)} WHERE district_id = {int(district_id)}"
        )
        # A slice at a time: millions of rows as Python tuples at once would take gigabytes.
        while rows := cur.fetchmany(FETCH_ROWS):
            part = pl.DataFrame(rows, schema=fetched, orient="row")
            parts.append(
                part.with_columns(hashed, key_hash(pl.col(KEY)).alias(KEYHASH)).select(
                    list(SNAPSHOT_SCHEMA)
                )
            )
    return pl.concat(parts)


def _natural_sql(entity: str) -> str:
    """The natural key fields joined as natural.natural_hash joins them, or NULL."""
    if entity not in NATURAL_KEYS:
        return "NULL"
    glue = f"chr({ord(SEPARATOR)})" if _is_postgres() else f"char({ord(SEPARATOR)})"
    return f" || {glue} || ".join(f"COALESCE({_q(f)}, '')" for f in NATURAL_KEYS[entity])


# A statement over a few listed keys (a _keyed_table) can hash the keys and walk every record
# of the entity, or seek each key in the unique index. PostgreSQL's planner prices a random
# page read at four sequential ones and hashes even 2% of a table's keys; measured at `large`
# (20k changed and 40k removed of 2M enrollments: their old data read, updated, marked
# removed), that took 5.3 s of server CPU, seeking 3.3 s. Seeking costs per key, walking per
# record: keys under this share of the entity's records are sought. Nor is such a statement
# compiled (JIT): priced by its rows, a seek per key of 50k looks big enough to PostgreSQL to
# compile, and over 500k of cost to inline and optimize too, which costs more than it saves on
# a statement that spends its time finding and writing pages.
SEEK_SHARE = 0.1
NOT_WHILE_SEEKING = ("enable_hashjoin", "enable_mergejoin", "jit")


@contextmanager
def _seeking(cur: Cursor, keyed: Keyed, entity: str) -> Iterator[None]:
    """Around a statement over listed keys of `entity`: on PostgreSQL, when they are a small
    share of its records (as its statistics know them), no hash or merge join, no JIT."""
    if not _is_postgres():
        yield
        return
    cur.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table(entity)])
    (held,) = cur.fetchone()  # -1: never counted, and then the planner decides
    if keyed.rows >= SEEK_SHARE * held:
        yield
        return
    for setting in NOT_WHILE_SEEKING:
        cur.execute(f"SET LOCAL {setting} = off")
    yield
    # Not reset if the statement failed: the transaction is then rolled back, and SET LOCAL
    # with it.
    for setting in NOT_WHILE_SEEKING:
        cur.execute(f"SET LOCAL {setting} = DEFAULT")


def _from_keyed(keyed: Keyed, district_id: int, entity: str) -> str:
    """FROM a few keys (a _keyed_table) into the roster: CROSS JOIN keeps SQLite from scanning
    the whole entity and probing the keys; it starts from the keys and seeks the unique index."""
    return (
        f"FROM {keyed.name} s CROSS JOIN {table(entity)} r "
        f"WHERE r.district_id = {int(district_id)} AND r.sourced_id = s._key"
    )


def _indexed(entity: str) -> frozenset[str]:
    """The entity's fields in an index of its table (the lookups, models.LOOKUPS, and keys).

    SQLite rewrites the index entries of every column an UPDATE assigns, changed or not, and
    so dirties those index pages: a sync's updated records (the 1% change at `huge`: 50k
    enrollments whose end date changed) wrote both enrollment lookups' pages again, at random
    places (~30k of the 334k pages it wrote, bench/README.md, sqlite1pct26). So on SQLite
    `write_records` assigns these fields apart, only to the records whose values differ
    (PostgreSQL compares them itself, as a HOT update does)."""
    model = MODELS[entity]
    indexes = [*model._meta.indexes, *model._meta.constraints]
    return frozenset(f for index in indexes for f in getattr(index, "fields", ()))


def _update_verb() -> str:
    """How a statement over many records of an apply updates them: on SQLite, OR FAIL.

    Inside a transaction SQLite keeps, for an UPDATE of many rows that a constraint could stop
    midway (NOT NULL: status, changed_sync_id), a copy of every page it changes as it was (its
    statement journal, a temporary file once past 64 KiB), to undo that statement alone and go
    on with the transaction. An apply never goes on after a failed statement: the error ends
    the sync and its transaction is rolled back whole (bulk_connection), so the copies were
    never read. At `huge`'s 1% change they were 233k pages, 950 MB written to /var/tmp in 465k
    calls (~880 MB of them reaching the disk): the UPDATEs' CPU 4.3-4.8 -> 2.4-2.7 s
    (bench/README.md, sqlwal29). OR FAIL stops at the failing row with the same error and keeps
    no copy. PostgreSQL has no such copy."""
    return "UPDATE" if _is_postgres() else "UPDATE OR FAIL"


@dataclass(frozen=True)
class Update:
    """What an UPDATE of listed records writes and returns (`_update_keyed`, `_update_by_id`,
    `_update_listed`): `sets`, assignments of its own (SQL, or ""); `columns`, (column, value)
    pairs whose values come from the listed row (e.g. `s.title`); `returning`, fields of the
    new version returned; `before` (PostgreSQL only), fields (canonical, or metadata as JSON
    text) of the version it replaces, returned suffixed _old."""

    sets: str = ""
    columns: Sequence[tuple[str, str]] = ()
    returning: Sequence[str] = ()
    before: Sequence[str] = ()

    def returned(self, name: str) -> str:
        """The RETURNING list of an UPDATE of table `name`: the key, row ID and `returning`
        of the new version, `before` of the old one (joined as `o`)."""
        new = [f"{name}.{c}" for c in ["sourced_id", "id", *map(_q, self.returning)]]
        old = [f"o.{METADATA}::text" if f == METADATA else f"o.{_q(f)}" for f in self.before]
        return ", ".join([*new, *old])

    def rows(self, cur: Cursor) -> pl.DataFrame:
        """The rows the UPDATE returned (`returned`), as a frame: RECORD_IDS, `returning`,
        and `before` suffixed _old."""
        schema = {
            **RECORD_IDS,
            **dict.fromkeys(self.returning, pl.String),
            **dict.fromkeys((f"{f}_old" for f in self.before), pl.String),
        }
        return pl.DataFrame(cur.fetchall(), schema=schema, orient="row")


@timed("db update", batch=True)
def _update_keyed(
    cur: Cursor,
    keyed: Keyed,
    district_id: int,
    entity: str,
    update: Update,
    moved_only: bool = False,
) -> pl.DataFrame:
    """UPDATE the records named in a _keyed_table, seeking each by the unique index; what
    `update` returns (`Update.rows`). `moved_only`: only the records whose `update.columns`
    differ from the table row's.

    `columns` are taken from the table's row of the same key (e.g. `s.title` for `title`); written
    as IN + a correlated row, which both SQLite and PostgreSQL plan as index lookups. `before`
    comes from the record's version before the update, the same row joined by its place (ctid):
    read by the statement that writes it, not sought once more by key first (`old_data`).
    """
    name = table(entity)
    columns = update.columns
    assignments = [update.sets] if update.sets else []
    if columns:
        targets = ", ".join(_q(c) for c, _ in columns)
        values = ", ".join(v for _, v in columns)
        assignments.insert(
            0,
            f"({targets}) = (SELECT {values} FROM {keyed.name} s WHERE s._key = {name}.sourced_id)",
        )
    prior, where = "", ""
    if moved_only:
        moved = " OR ".join(f"{v} IS NOT {name}.{_q(c)}" for c, v in columns)
        where = (
            f"AND EXISTS (SELECT 1 FROM {keyed.name} s "
            f"WHERE s._key = {name}.sourced_id AND ({moved})) "
        )
    if update.before:
        assert _is_postgres(), "SQLite's RETURNING gives only the new version"
        prior, where = f"FROM {name} o ", f"AND o.ctid = {name}.ctid "
    with _seeking(cur, keyed, entity):
        cur.execute(
            f"{_update_verb()} {name} SET {', '.join(assignments)} {prior}"
            f"WHERE {name}.district_id = {int(district_id)} "
            f"AND {name}.sourced_id IN (SELECT _key FROM {keyed.name}) {where}"
            f"RETURNING {update.returned(name)}"
        )
        return update.rows(cur)


def seeks_by_id() -> bool:
    """Whether updates and removals seek a record by its row ID where the snapshot knows it
    (ROW_ID, `_update_listed`): on PostgreSQL, through the primary key in the heap's order
    (the unique key's leaves, sought at random, were ~40% of the pages those statements read
    at `huge`, bench/README.md pg1pct28). SQLite's rows are its table's b-tree in row ID order
    already, and its unique key as before: not measured there."""
    return _is_postgres()


@dataclass(frozen=True)
class Listed:
    """What `_update_listed` did: the rows its UPDATEs returned, and the temporary table of
    every listed record keyed by _key where it made one (`whole`; None when some were sought
    by row ID: that table then holds only the others)."""

    rows: pl.DataFrame
    whole: Keyed | None


def _update_listed(
    cur: Cursor, name: str, frame: pl.DataFrame, district_id: int, entity: str, update: Update
) -> Listed:
    """`_update_keyed` over the records of `frame` (_key, the columns `update.columns` take,
    and ROW_ID where known), in a temporary table `name`: those whose row ID is known sought
    by it (`_update_by_id`, where `seeks_by_id`), the others by key, and so are any whose row
    ID named no record of that key (a snapshot out of date: none should), so that a wrong ID
    never costs more than a seek. The same rows returned either way."""
    parts = []
    by_key = frame
    if seeks_by_id() and ROW_ID in frame.columns:
        known = frame.filter(pl.col(ROW_ID).is_not_null())
        if known.height:
            keyed = _keyed_table(cur, name, known, key=ROW_ID)
            rows = _update_by_id(cur, keyed, district_id, entity, update)
            parts.append(rows)
            found = pl.col(ROW_ID).is_in(rows["_id"].implode())
            by_key = frame.filter(pl.col(ROW_ID).is_null() | ~found)
    whole = None
    if by_key.height or not parts:
        keyed = _keyed_table(cur, name, by_key.drop(ROW_ID, strict=False))
        parts.append(_update_keyed(cur, keyed, district_id, entity, update))
        whole = None if len(parts) > 1 else keyed
    return Listed(pl.concat(parts), whole)


@timed("db update by id", batch=True)
def _update_by_id(
    cur: Cursor, keyed: Keyed, district_id: int, entity: str, update: Update
) -> pl.DataFrame:
    """`_update_keyed` on PostgreSQL over a _keyed_table keyed by ROW_ID: each record sought by
    its row ID in the primary key, in ID order (the table's rows are), and updated only if it
    still has the key listed with it (a row ID is a record's for good, but a snapshot could be
    out of date); `columns` taken from the same row of the keyed table, joined, not sought in
    it by key again. Returns what _update_keyed returns, for the records it updated."""
    name = table(entity)
    assignments = [f"{_q(c)} = {v}" for c, v in update.columns]
    assignments += [update.sets] if update.sets else []
    sources = [f"{keyed.name} s"]
    where = [
        f"{name}.id = s.{ROW_ID}",
        f"{name}.sourced_id = s._key",
        f"{name}.district_id = {int(district_id)}",
    ]
    if update.before:
        # The version the update replaces: the same row, joined by its place.
        sources.append(f"{name} o")
        where.append(f"o.ctid = {name}.ctid")
    with _seeking(cur, keyed, entity):
        cur.execute(
            f"UPDATE {name} SET {', '.join(assignments)} FROM {', '.join(sources)} "
            f"WHERE {' AND '.join(where)} RETURNING {update.returned(name)}"
        )
        return update.rows(cur)


@timed("db old data", batch=True)
def old_data(cur: Cursor, district_id: int, entity: str, keys: pl.DataFrame) -> pl.DataFrame:
    """Stored fields and metadata (as JSON text) of the given keys (column _key), for the
    field-level before/after of changed records."""
    return fields_of(cur, district_id, entity, keys, [*FIELDS[entity], METADATA])


def fields_of(
    cur: Cursor, district_id: int, entity: str, keys: pl.DataFrame, fields: Sequence[str]
) -> pl.DataFrame:
    """_key and `fields` (canonical fields, or metadata as JSON text) of the records of the
    given keys (column _key, unique), each sought by the unique index."""
    keyed = _keyed_table(cur, "rd_keys", keys)
    metadata = "r.metadata::text" if _is_postgres() else "r.metadata"
    columns = ", ".join(metadata if f == METADATA else f"r.{_q(f)}" for f in fields)
    with _seeking(cur, keyed, entity):
        cur.execute(f"SELECT r.sourced_id, {columns} {_from_keyed(keyed, district_id, entity)}")
        rows = cur.fetchall()
    schema = {KEY: pl.String, **dict.fromkeys(fields, pl.String)}
    return pl.DataFrame(rows, schema=schema, orient="row")


def listed(cur: Cursor, name: str, keys: pl.Series) -> str:
    """A temporary table `name` of the given keys (column _key), for a query that filters on
    them (`sourced_id IN (SELECT _key FROM name)`) where a list of parameters could be too
    long; its name."""
    return _keyed_table(cur, name, pl.DataFrame({KEY: keys.unique()})).name


def rename_records(
    cur: Cursor, district_id: int, entity: str, sync_id: int, renames: pl.DataFrame
) -> pl.DataFrame:
    """Give records a new source ID (`renames` has _old_key and _key, the new one), and leave
    under each old ID what a removal leaves: the record as it was, tobedeleted as of this
    sync. A reader of the roster then sees the old ID deleted as it sees any removed record,
    and an old ID sent again comes back as a removed one does. Returns _key (the new ID),
    _old_key and _left_id, the row left under the old one (the renamed record's own row ID
    comes back from the update that writes its data, write_records). `renames` may have
    ROW_ID too, each renamed record's row ID where known: it keeps it under its new ID."""
    ids = [ROW_ID] if ROW_ID in renames.columns else []
    listed = renames.select(pl.col("_old_key").alias("_key"), pl.col("_key").alias("_new"), *ids)
    moved = Update(columns=(("sourced_id", "s._new"),))
    done = _update_listed(cur, "rd_renamed", listed, district_id, entity, moved)
    keyed = done.whole or _keyed_table(cur, "rd_renamed", listed.drop(ids))
    kept = ["district_id", "content_hash", "first_seen_sync_id", METADATA, *map(_q, FIELDS[entity])]
    with _seeking(cur, keyed, entity):
        cur.execute(
            f"INSERT INTO {table(entity)} (sourced_id, status, changed_sync_id, {', '.join(kept)}) "
            f"SELECT s._key, 'tobedeleted', {int(sync_id)}, {', '.join(f'r.{c}' for c in kept)} "
            f"FROM {keyed.name} s "
            f"CROSS JOIN {table(entity)} r WHERE r.district_id = {int(district_id)} "
            "AND r.sourced_id = s._new ORDER BY s._key RETURNING sourced_id, id"
        )
        left = pl.DataFrame(cur.fetchall(), schema=RECORD_IDS, orient="row")
    left = left.rename({KEY: "_old_key", "_id": "_left_id"})
    renamed = renames.select(KEY, "_old_key")
    return renamed.join(left, on="_old_key", how="left", maintain_order="left")


def write_records(
    cur: Cursor,
    district_id: int,
    entity: str,
    sync_id: int,
    *,
    added: pl.DataFrame | Staged | Formatted,
    changed: pl.DataFrame,
    removed: pl.DataFrame,
    returning: Sequence[str] = (),
    before: bool = False,
) -> pl.DataFrame:
    """Insert added records, rewrite changed/reactivated ones, mark removed ones tobedeleted;
    the keys and row IDs of the changed and removed ones (RECORD_IDS), of the removed ones the
    `returning` fields, read by the statement that marks them (what they named, for
    ingest.gaps: not sought again after), and (`before`) of the changed ones their fields and
    metadata as they were, suffixed _old (the change rows' before values).

    `changed` has columns _key, _hash, the entity's fields and metadata (JSON text, or null),
    and so has `added`, or it is `new_rows` made ready ahead: a staged file (SQLite), or
    `Formatted` with `new_record_columns` (PostgreSQL); `removed` has _key. `changed` and
    `removed` may have ROW_ID too, each record's row ID where known (`_update_listed`). `added`
    comes in key order (apply sorts each key range), so index pages fill one after another.
    """
    stamp = f"changed_sync_id = {int(sync_id)}"
    columns = [*FIELDS[entity], METADATA]
    constants = new_record_columns(district_id, sync_id)
    if isinstance(added, Staged):
        insert_staged(cur, table(entity), added, constants)
    elif isinstance(added, Formatted):
        _load(cur, table(entity), added)
    elif added.height:
        _load(cur, table(entity), new_rows(entity, added), constants)
    olds = dict.fromkeys((f"{c}_old" for c in columns) if before else (), pl.String)
    written = [pl.DataFrame(schema={**RECORD_IDS, **dict.fromkeys(returning, pl.String), **olds})]
    if changed.height:
        # PostgreSQL's UPDATE returns the version it replaces; SQLite's only the new one, so
        # there they are read first.
        prior = before and not _is_postgres()
        old = old_data(cur, district_id, entity, changed.select(KEY)) if prior else None
        ids = [ROW_ID] if ROW_ID in changed.columns else []
        listed = changed.select(KEY, HASH, *columns, *ids)
        taken = [(c, json_value(f"s.{c}") if c == METADATA else f"s.{_q(c)}") for c in columns]
        taken.append(("content_hash", f"s.{HASH}"))
        sets = f"status = 'active', {stamp}"
        kept = columns if before and not prior else ()
        apart = frozenset() if _is_postgres() else _indexed(entity)
        indexed = [t for t in taken if t[0] in apart]
        rest = [t for t in taken if t not in indexed]
        update = Update(sets, rest, before=kept)
        done = _update_listed(cur, "rd_changed", listed, district_id, entity, update)
        rows = done.rows
        if indexed:  # SQLite's: its table keyed by _key was made for the first
            keyed = done.whole or _keyed_table(cur, "rd_changed", listed.drop(ids))
            _update_keyed(cur, keyed, district_id, entity, Update(columns=indexed), moved_only=True)
        if old is not None:
            old = old.rename({c: f"{c}_old" for c in columns})
            rows = rows.join(old, on=KEY, how="left", maintain_order="left")
        written.append(rows)
    if removed.height:
        sets = f"status = 'tobedeleted', {stamp}"
        marked = Update(sets, returning=returning)
        written.append(_update_listed(cur, "rd_removed", removed, district_id, entity, marked).rows)
    return pl.concat(written, how="diagonal")


def new_record_columns(district_id: int, sync_id: int) -> dict[str, object]:
    """The columns a sync's new records get beside their data, by name."""
    return {
        "district_id": district_id,
        "status": "active",
        "first_seen_sync_id": sync_id,
        "changed_sync_id": sync_id,
    }


def new_rows(entity: str, records: pl.DataFrame) -> pl.DataFrame:
    """New records (_key, _hash, fields, metadata) as the columns of their table."""
    return records.select(
        pl.col(KEY).alias("sourced_id"),
        pl.col(HASH).alias("content_hash"),
        *FIELDS[entity],
        METADATA,
    )


@timed("db insert staged", batch=True)
def insert_staged(
    cur: Cursor, table_name: str, staged: Staged, constants: dict[str, object]
) -> None:
    """Copy a staged file's rows into `table_name`, in SQLite, with one statement."""
    cur.execute("PRAGMA database_list")
    alias = f"{staging.ALIAS}{len(cur.fetchall())}"
    cur.execute(f"ATTACH DATABASE ? AS {alias}", [str(staged.path)])
    names = ", ".join(_q(c) for c in [*staged.columns, *constants])
    values = ", ".join([*(_q(c) for c in staged.columns), *map(_literal, constants.values())])
    cur.execute(f"INSERT INTO {table_name} ({names}) SELECT {values} FROM {alias}.{staging.TABLE}")


# The reference indexes of the console's pages (models.LOOKUPS) fill in random key order as
# records arrive: at 5M enrollments that tripled a first import's CPU (65.6 -> 197 s). Built
# once after the rows are in, each costs ~5 s at that size. Only where the addition is most of
# the table (a district's first import on a fresh or small installation), so that no import of
# a small district rebuilds the indexes of every other one. Even built after, they are the
# biggest part of a first import's database work (two sorts of 5M keys that start with a
# 36-character ID: ~40 s of CPU at `huge` on SQLite, 34 s of the server's on PostgreSQL), so
# they are left to after the sync commits, off its path (`build_missing_indexes`,
# ingest/index_builds.py), and every reader is correct meanwhile, only slower. On SQLite the
# import is the one writer anyway and readers keep the committed schema. On PostgreSQL a DROP
# INDEX locks every reader of the table out until the commit, so there the lookups, every
# other secondary index and the unique key are dropped only when the table holds no other
# district's records and nobody else is using it at that moment (locked without waiting): a
# district's first import into an installation that has none of that entity yet. The unique
# key is built again in the sync's transaction (measured on 500k enrollments: 75 s to COPY
# into the indexed table, 25 s to load and build the indexes after): it keeps a source ID to
# one record from the commit on. Every other index is built after it, CONCURRENTLY, as the
# lookups are: neither readers nor the next sync wait for them. The reading indexes
# (`_in_order`, `_first_seen`) too: the sync reads none of its table's records through them
# (the feed's created events count and number a first import's records, every record of the
# table, with a scan: EXPLAIN at `huge`), and each was a scan of the whole table and a sort
# in the sync (5M enrollments: ~2.8 s of server CPU each, bench/README.md pgfirst25). On
# SQLite the reading indexes go too (not the unique key: it is part of the table): they fill at
# their end, but each is an entry per record written in the sync (~0.45 s of CPU per 1M
# records for the two, ~3 s at `huge`, bench/README.md sqlfirst27); the feed is told a first
# import's created records by apply (`ids_appended`), and a bulk package walks the district's
# records `INDEXED BY` its `_in_order` only once it is there (`walks_in_order`).
DEFER_LOOKUPS_MIN = 100_000
# Memory for each index build on PostgreSQL (its default, 64 MB, sorts 5M keys on disk).
BUILD_MEMORY = "512MB"
# The key of the advisory lock of PostgreSQL's concurrent builds of the lookups, one at a time
# (one bigint: apart from ingest's locks, which take two keys).
BUILD_LOCK = 0x5244_4C4B


@contextmanager
def lookups_built_after(cur: Cursor, entity: str, adding: int, district_id: int) -> Iterator[bool]:
    """Around the writes of an entity: when `adding` records outnumber the table's, drop its
    secondary indexes (the reference and the reading ones) first, to be built after the sync
    (`build_missing_indexes`); on PostgreSQL with the unique key too, which is built again at
    the end in the same transaction. Otherwise, on SQLite, build first those of the entity
    still missing (a build after an earlier sync that has not run, or died; on PostgreSQL the
    build after each sync does, concurrently). Yields whether the
    table's statistics are made again at the end with every record in (PostgreSQL's build),
    so that refresh_statistics need not."""
    model = MODELS[entity]
    postgres = _is_postgres()
    indexes: list[Any] = list(model._meta.indexes)
    deferred = [*indexes, *model._meta.constraints] if postgres else indexes
    if deferred and adding >= DEFER_LOOKUPS_MIN:
        held = last_id(cur, entity)  # the rowid, or the primary key
        if adding > held and (not postgres or take_table(cur, table(entity), district_id)):
            _drop(cur, entity, deferred)
            yield postgres
            if postgres:
                _build_in_transaction(cur, entity, list(model._meta.constraints))
            return
    if not postgres and (missing := _missing(cur, entity, indexes)):
        _build(cur, entity, missing)
    yield False


def _drop(cur: Cursor, entity: str, indexes: list[Any]) -> None:
    for index in indexes:
        if isinstance(index, models.UniqueConstraint):
            cur.execute(f"ALTER TABLE {table(entity)} DROP CONSTRAINT {_q(index.name)}")
        else:
            cur.execute(f"DROP INDEX IF EXISTS {_q(index.name)}")


def _build_in_transaction(
    cur: Cursor, entity: str, indexes: list[Any], analyze: bool = True
) -> None:
    """PostgreSQL: build indexes an import dropped, then (`analyze`) the table's statistics."""
    cur.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
    _build(cur, entity, indexes)
    if not analyze:
        return
    # The builds told the planner the table's size but nothing of its columns: the gaps
    # counted next (ingest.gaps) then walked roles once per user (large: over 68 s of server
    # CPU, cancelled) instead of hashing them. Column statistics, so the lookups built after
    # the commit need none of their own.
    cur.execute(f"ANALYZE {table(entity)}")


def _missing(
    cur: Cursor, entity: str, indexes: Sequence[models.Index] | None = None
) -> list[models.Index]:
    """The entity's `indexes` (by default its reference indexes) not in the database; on
    PostgreSQL also those there but not valid: one a concurrent build left when it failed or
    its process died, which no query uses."""
    if _is_postgres():
        cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass AND i.indisvalid",
            [table(entity)],
        )
    else:
        cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s", [table(entity)]
        )
    present = {name for (name,) in cur.fetchall()}
    wanted = LOOKUP_INDEXES.get(entity, []) if indexes is None else indexes
    return [index for index in wanted if index.name not in present]


def walks_in_order(entity: str) -> bool:
    """Whether a read of a district's records may name the entity's `_in_order` index (SQLite's
    INDEXED BY): a first import leaves it to after its sync, and naming a missing index fails."""
    in_order = [index for index in MODELS[entity]._meta.indexes if index.name == IN_ORDER[entity]]
    with connection.cursor() as cur:
        return not _missing(cur, entity, in_order)


def lookups_built(entity: str) -> bool:
    """Whether the entity's reference indexes are all in place (and valid): a first import
    leaves them to after its sync."""
    with connection.cursor() as cur:
        return not _missing(cur, entity)


def probes_by_reference(entity: str) -> bool:
    """Whether a query may ask, record by record, whether a record of `entity` names it (a
    correlated EXISTS, ingest.gaps). SQLite answers each from the entity's reference index,
    and while that is missing would scan the table for each record: `IN` a subquery is then
    the way to ask. PostgreSQL plans EXISTS as a join, hashing the table when the index is
    missing, and `NOT IN` a subquery too big for its work_mem as a scan of the subquery's rows
    for each record (EXPLAIN at `large`: ~6e9 against ~1.3e5 for the hash anti join)."""
    return _is_postgres() or lookups_built(entity)


def build_missing_indexes() -> None:
    """Build the indexes a first import left to after its sync, or a crash left out: every
    secondary index of a table it took (the reading ones first, then the reference ones).
    SQLite: each in a transaction of its own: each holds the write lock while it sorts (~20 s
    at 5M enrollments), and a sync waits for it no longer than that. PostgreSQL: CONCURRENTLY,
    so that neither readers nor writers wait for it, an invalid one left by a build that failed
    or died dropped first; one build at a time, and none while another process builds (an
    advisory lock, not waited for: a backend waiting for it would hold a snapshot, which the
    other's concurrent build waits for in turn). Inside a caller's transaction, where
    PostgreSQL refuses CONCURRENTLY, plainly."""
    if _is_postgres():
        _build_missing_on_postgresql()
        return
    for entity in ENTITIES:
        while True:
            with bulk_connection() as cur:
                missing = _missing(cur, entity, MODELS[entity]._meta.indexes)
                if not missing:
                    break
                _build(cur, entity, missing[:1])


def _build_missing_on_postgresql() -> None:
    concurrently = not connection.in_atomic_block
    how = "CONCURRENTLY " if concurrently else ""
    with connection.cursor() as wrapper:
        cur = wrapper.cursor
        if not any(_missing(cur, entity, MODELS[entity]._meta.indexes) for entity in ENTITIES):
            return
        cur.execute("SELECT pg_try_advisory_lock(%s)", [BUILD_LOCK])
        if not cur.fetchone()[0]:
            return
        cur.execute(f"SET maintenance_work_mem = '{BUILD_MEMORY}'")
        try:
            for entity in ENTITIES:
                for index in _missing(cur, entity, MODELS[entity]._meta.indexes):
                    cur.execute(f"DROP INDEX {how}IF EXISTS {_q(index.name)}")
                    _build(cur, entity, [index], concurrently=concurrently)
        finally:
            cur.execute("RESET maintenance_work_mem")
            cur.execute("SELECT pg_advisory_unlock(%s)", [BUILD_LOCK])


@timed("build indexes")
def _build(cur: Cursor, entity: str, indexes: list[Any], *, concurrently: bool = False) -> None:
    model, editor = MODELS[entity], connection.schema_editor()  # the editor only writes SQL
    for index in indexes:
        # A unique constraint's create_sql takes no `concurrently` (none is built so).
        options = {"concurrently": True} if concurrently else {}
        cur.execute(str(index.create_sql(model, editor, **options)))


def take_table(cur: Cursor, name: str, district_id: int | None = None) -> bool:
    """Lock a table with a district_id column for this transaction (PostgreSQL) if nobody else
    is using it now (no waiting) and it holds no other district's rows (with no district: no
    rows at all); whether it was."""
    import psycopg

    where = "" if district_id is None else f" WHERE district_id <> {int(district_id)}"
    cur.execute("SAVEPOINT rd_take_table")
    try:
        cur.execute(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE NOWAIT")
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {name}{where})")
        others = cur.fetchone()[0]
    except psycopg.errors.LockNotAvailable:
        others = True
    # Rolled back to, the savepoint lets go of the lock taken after it.
    cur.execute(f"{'ROLLBACK TO' if others else 'RELEASE'} SAVEPOINT rd_take_table")
    return not others


# PostgreSQL plans the lookups of listed keys from the table's statistics. After a load that
# changed the table's make-up (a district's first import), stale ones make it walk a whole
# entity and probe the listed keys for each record, instead of seeking each listed key
# (measured on 2M enrollments, marking 20k removed: 6.2 s against 0.9 s). Autovacuum
# catches up only later, and only where it runs.
ANALYZE_ADDED_SHARE = 0.1
ANALYZE_ADDED_MIN = 10_000


def stale_statistics(
    added: dict[str, int], before: dict[str, int], analyzed: Collection[str] = ()
) -> set[str]:
    """The entities whose statistics no longer describe their tables once `added` records
    are written to tables holding `before` active ones, unless the transaction made them
    again with every record in (`analyzed`: lookups_built_after's ANALYZE; a second one cost
    ~0.5 s of server CPU per million records at `large`, for nothing)."""
    return {
        entity
        for entity, count in added.items()
        if count >= ANALYZE_ADDED_MIN and count > ANALYZE_ADDED_SHARE * before.get(entity, 0)
    } - set(analyzed)


def refresh_statistics(stale: Collection[str]) -> None:
    """After the commit, the statistics of the entities it left `stale` (stale_statistics)."""
    if not _is_postgres():
        return
    with connection.cursor() as cur:
        for entity in sorted(stale):
            cur.execute(f"ANALYZE {table(entity)}")


@contextmanager
def whole_joins() -> Iterator[None]:
    """The queries inside planned as joins of whole tables (hashed or merged), never as a
    nested loop, on PostgreSQL: for a count over every record of a district, in a transaction
    that wrote more of its records than the statistics know of. Planned from those, a table
    taken for a row or two gets walked whole once per record of the other (a first import's
    gaps: 33-55 s at 31k enrollments, each class probing every student's enrollment), where
    one hash of each costs milliseconds. Inside a savepoint, so that an error reverts it."""
    if not _is_postgres():
        yield
        return
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT current_setting('enable_nestloop')")
        (was,) = cur.fetchone()
        cur.execute("SELECT set_config('enable_nestloop', 'off', true)")
        yield
        cur.execute("SELECT set_config('enable_nestloop', %s, true)", [was])


class RosterChanged(Exception):
    """Another sync changed the district's roster after this one planned against it."""


def roster_token(district_id: int) -> int:
    """The district's roster token as committed now (another import may have claimed it)."""
    return RosterToken.objects.values_list("token", flat=True).get(district_id=district_id)


def claim_roster(cur: Cursor, district_id: int, token: int) -> int:
    """Give the district's roster a new token, or fail if it no longer has `token`."""
    new = new_roster_token()
    p, table = _param(), RosterToken._meta.db_table
    cur.execute(
        f"UPDATE {table} SET token = {p} WHERE district_id = {p} AND token = {p}",
        [new, district_id, token],
    )
    if cur.rowcount != 1:
        raise RosterChanged(f"district {district_id} changed while this import was planned")
    return new


def insert_rows(
    cur: Cursor, table: str, columns: list[str], rows: list[tuple[object, ...]]
) -> None:
    """Append rows to an app table with the bulk path. Every row decides its columns' types
    (a column empty in the first hundred rows and filled later is not refused)."""
    frame = pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)
    _load(cur, table, frame)


def update_row(
    cur: Cursor,
    table: str,
    row_id: int,
    values: dict[str, object],
    json_columns: tuple[str, ...] = (),
) -> None:
    """Update one row of an app table inside the bulk transaction."""
    p = _param()
    sets = ", ".join(f"{c} = {json_value(p) if c in json_columns else p}" for c in values)
    cur.execute(f"UPDATE {table} SET {sets} WHERE id = {int(row_id)}", list(values.values()))


# A first import on PostgreSQL copies each entity's records into its table while the client
# reads the rest of the files (`Loader`): the server's COPY beside the client's read, instead
# of after it. At most this many batches wait for the copying thread: a reader faster than
# the server waits for it rather than holding the batches in memory.
LOAD_QUEUE = 2
# Blocks of CSV waiting for a COPY's sending thread (`_Sending`): COPY_BLOCKS of COPY_BLOCK
# bytes (psycopg's largest write to libpq), ~20 MB: ~a batch of enrollments.
COPY_BLOCK = 128 * 1024
COPY_BLOCKS = 160


@dataclass
class Loaded:
    """An entity's records a `Loader` copied: the first of their row IDs, how many were
    numbered (ROW, as the spill numbers them) and each batch's row numbers in the order its
    records were copied, by key: they take the batch's IDs (first_id + its row numbers) in
    ascending order, so that the table's rows are in ID order and in key order within each
    batch."""

    first_id: int
    rows: int = 0
    copied: list[np.ndarray] = field(default_factory=list)

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """The row IDs of the records with these row numbers."""
        place = np.arange(self.rows, dtype=np.int64)
        for numbers in self.copied:
            place[numbers] = np.sort(numbers)
        ids: np.ndarray = place[rows] + self.first_id
        return ids


class Loader:
    """Copies a first import's records into their tables, on Django's connection, in a thread,
    as the reader spills them (`__call__`, from the reading thread), inside the caller's
    transaction: nothing is visible before it commits, and its rollback (a fatal file, a held
    sync, an error, a killed process) takes every copied record away.

    Only into a table that is empty and that nobody else is using (locked without waiting, to
    the end of the transaction): its indexes and unique key are dropped first, as
    `lookups_built_after` drops them, the unique key built again by `finish_load` once the plan
    is known, the indexes after the sync (`build_missing_indexes`);
    an entity whose table is not is left to apply (not in `loaded`). Each record gets the row
    ID first_id + a row number of its batch (`Loaded`; the table's sequence moved past them in
    `finish`), so that `finish_load` deletes by ID the records the checks across rows refused
    (a duplicate ID, a reference to nothing). A batch's records reach the table sorted by key,
    the batch's IDs given in that order: the table's rows are then in ID order, and in runs
    sorted by key, which PostgreSQL's builds of the unique key (a sort of every record's
    source ID) and of the reading indexes (in ID order) find mostly or wholly sorted (at
    `large`, 2M enrollments in batches of 88k: the three builds ~8 s of the server's CPU in
    file order, ~4 s so).

    The reading thread never uses the connection while a Loader is open (engine.check needs no
    database), so the copies never wait for it, nor it for them beyond LOAD_QUEUE batches.
    From the read on, the transaction sees the sync's own records in those tables, refused
    ones too until `finish_load`: what reads the roster before apply must allow for it (the
    rollover check of a new school year finds the copied sessions, and no later one)."""

    def __init__(self, cur: Cursor, district_id: int, sync_id: int, row: str):
        self._conn, self._row = cur.connection, row
        self._constants = new_record_columns(district_id, sync_id)
        # Each table's columns as binary COPY sends them, known here, on Django's connection.
        self._types = {entity: _binary_types(entity) for entity in MODELS}
        self.loaded: dict[str, Loaded] = {}
        # Per entity asked for: set by the thread once it took its table (`loaded`) or not.
        self._taken: dict[str, threading.Event] = {}
        self._queue: queue.Queue[tuple[str, pl.DataFrame | None] | None] = queue.Queue(LOAD_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rosterdrop-load", daemon=True)
        self._thread.start()

    def __call__(self, entity: str, rows: pl.DataFrame) -> bool:
        """Copy a batch of an entity's spilled records: _key, _hash, fields, metadata and
        their row numbers (column `row`). Whether they go to the table: not if the table was
        not taken, and then the entity is left to apply. The first batch of an entity waits
        for its table to be taken (after the batches queued before it)."""
        if entity not in self._taken:
            self._taken[entity] = threading.Event()
            self._put((entity, None))
            self._taken[entity].wait()
        self._put((entity, rows))
        return entity in self.loaded

    def _put(self, item: tuple[str, pl.DataFrame | None]) -> None:
        if self._error is not None:
            raise RuntimeError("copying the records failed") from self._error
        self._queue.put(item)

    def _run(self) -> None:
        with self._conn.cursor() as cur:
            copy = _Copying(cur, self._types)
            while (item := self._queue.get()) is not None:
                entity, rows = item
                try:
                    if self._error is not None:
                        continue  # drained: the reader never waits for a thread that stopped
                    if rows is None or copy.entity != entity:
                        copy.end()  # the table's statements, or another table's COPY, next
                    if rows is None:
                        self._take(cur, entity)
                    elif entity in self.loaded:
                        copy.write(entity, self._records(entity, rows))
                except BaseException as error:  # raised in the reading thread
                    self._error = error
                    copy.end(error)
                finally:
                    if rows is None:
                        self._taken[entity].set()
            try:
                copy.end()
            except BaseException as error:
                self._error = self._error or error

    @timed("db records", batch=True)
    def _records(self, entity: str, rows: pl.DataFrame) -> pa.Table:
        """A batch's records as their table's columns, sorted by key, with their row IDs, in
        the Arrow types binary COPY sends them in (`_binary_types`)."""
        loaded = self.loaded[entity]
        # On this thread: polars' pool is the reading thread's.
        rows = rows.sort(KEY, multithreaded=False)
        numbers = rows[self._row].to_numpy()
        loaded.copied.append(numbers)
        loaded.rows = max(loaded.rows, int(numbers.max()) + 1)
        record = rows.select(
            (pl.col(self._row).sort().cast(pl.Int64) + loaded.first_id).alias("id"),
            pl.col(KEY).alias("sourced_id"),
            pl.col(HASH).alias("content_hash"),
            *FIELDS[entity],
            METADATA,
            *(pl.lit(value).alias(name) for name, value in self._constants.items()),
        )
        record = record.cast({c: BINARY_DTYPES[t] for c, t in self._types[entity].items()})
        # Each string copied in its new place (Arrow's large strings, one buffer), so that the
        # encoder reads them in order, not each where the sort left it (88k enrollments: ~42 ms
        # of CPU to sort, copy and encode, ~62 from polars' string views; the CSV ~55).
        return record.to_arrow(compat_level=pl.CompatLevel.oldest())

    def _take(self, cur: Cursor, entity: str) -> None:
        """Lock the entity's table if it is empty and nobody is using it, drop its indexes and
        reserve its first row ID (then it is `loaded`)."""
        name = table(entity)
        if not take_table(cur, name):
            return
        model = MODELS[entity]
        _drop(cur, entity, [*model._meta.indexes, *model._meta.constraints])
        cur.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [name])
        self.loaded[entity] = Loaded(first_id=cur.fetchone()[0])

    def finish(self) -> dict[str, Loaded]:
        """Once every file is read: wait for the last copies, move each table's sequence past
        the IDs given; the entities loaded."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("copying the records failed") from self._error
        with self._conn.cursor() as cur:
            for entity, loaded in self.loaded.items():
                last = loaded.first_id + max(loaded.rows, 1) - 1
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table(entity), last]
                )
        return self.loaded

    def close(self) -> None:
        """Stop the thread (after the copy it is in): before the transaction ends, whatever
        ends it."""
        if self._thread.is_alive():
            self._error = self._error or _Stopped()
            self._queue.put(None)
            self._thread.join()


class _Copying:
    """One COPY statement into an entity's table, open while its batches follow each other,
    its data sent by a thread of its own (`_Sending`): the copying thread hands a batch's data
    over and sorts and encodes the next while the server parses, and the reader goes on. A
    statement per batch, sent from the copying thread, made the reader wait for the server
    batch by batch (at `huge`, load 17: 35 s of the read's 92; bench/README.md, pgfirst28).

    In COPY's binary format, encoded from Arrow by pgpq (in Rust, no Python per row): the
    server reads each value's length instead of parsing CSV (352k enrollments: 0.49-0.54 s of
    the backend's CPU against 0.64-0.65 s), and the client's encoding costs less than polars'
    CSV (bench/README.md, pgbinary30)."""

    def __init__(self, cur: Cursor, types: dict[str, dict[str, str]]):
        self._cur, self.types = cur, types  # types: each entity's `_binary_types`
        self.entity: str | None = None
        # The cursor's copy() context (kept: dropped, its generator ends the COPY), its Copy,
        # and the encoder of the statement's rows (a header, the rows, a trailer).
        self._context: Any = None
        self._copy: Any = None
        self._encoder: Any = None

    @timed("db insert", batch=True)
    def write(self, entity: str, records: pa.Table) -> None:
        """Append to the entity's COPY, opened first if another table's (or none) was."""
        import psycopg
        from psycopg.copy import LibpqWriter

        if self.entity != entity:
            self.end()
            status = self._cur.connection.info.transaction_status
            if status != psycopg.pq.TransactionStatus.INTRANS:
                raise RuntimeError("records are copied only inside the import's transaction")
            encoder = _binary_encoder(self.types[entity], records.schema)
            names = ", ".join(_q(c) for c in records.column_names)
            sql = f"COPY {table(entity)} ({names}) FROM STDIN (FORMAT binary)"
            self._context = self._cur.copy(sql, writer=_Sending(LibpqWriter(self._cur)))
            self._copy = self._context.__enter__()
            self._encoder, self.entity = encoder, entity
            self._copy.write(encoder.write_header())
        for batch in records.to_batches():
            # pgpq keeps what it encoded until it holds 1 MB: b"" until then.
            if data := self._encoder.write_batch(batch):
                self._copy.write(data)

    def end(self, error: BaseException | None = None) -> None:
        """End the open COPY, if any: after every row is in (it waits for the server), or,
        given an `error`, abandoned (the server's error, if it has one, is not raised)."""
        context, copy, encoder = self._context, self._copy, self._encoder
        self._context, self._copy, self._encoder, self.entity = None, None, None, None
        if context is None:
            return
        if error is None:
            try:
                copy.write(encoder.finish())  # what is left of the rows, and the trailer
            except BaseException as failed:
                self._abandon(context, failed)
                raise
            context.__exit__(None, None, None)
            return
        self._abandon(context, error)

    @staticmethod
    def _abandon(context: Any, error: BaseException) -> None:
        with suppress(Exception):
            context.__exit__(type(error), error, error.__traceback__)


# The Arrow and polars types of a roster table's columns in binary COPY, by their type in
# PostgreSQL: pgpq sends an int64 as int8 (bigint), a large string as text (varchar reads the
# same bytes) or as jsonb (a version byte, then the JSON text, which the server parses as it
# parses the CSV's).
BINARY_DTYPES: dict[str, PolarsDataType] = {"int8": pl.Int64, "text": pl.String, "jsonb": pl.String}


def _binary_types(entity: str) -> dict[str, str]:
    """The columns of an entity's table and the kind of each in binary COPY (BINARY_DTYPES)."""
    kinds: dict[str, str] = {}
    for column in MODELS[entity]._meta.concrete_fields:
        db_type, name = str(column.db_type(connection)), str(column.column)
        if db_type == "bigint":
            kinds[name] = "int8"
        elif db_type == "text" or db_type.startswith("varchar("):
            kinds[name] = "text"
        elif db_type == "jsonb":
            kinds[name] = "jsonb"
        else:
            raise TypeError(f"{entity}.{name}: {db_type} is not sent by binary COPY")
    return kinds


def _binary_encoder(kinds: dict[str, str], schema: pa.Schema) -> Any:
    """pgpq's encoder of an entity's records (`Loader._records`) into binary COPY: each column
    encoded as its table's type (`kinds`: `_binary_types`); one per COPY statement."""
    import pgpq
    from pgpq import encoders
    from pgpq import schema as pg

    builders: dict[str, Any] = {}
    for column in schema:
        kind = kinds[column.name]
        if kind == "int8":
            builders[column.name] = encoders.Int64EncoderBuilder(column)
        else:
            output = pg.Jsonb() if kind == "jsonb" else pg.Text()
            builders[column.name] = encoders.LargeStringEncoderBuilder.new_with_output(
                column, output
            )
    return pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(schema, builders)


class _Sending:
    """A psycopg COPY `Writer` (`cursor.copy(..., writer=)`) whose data a thread of its own
    hands to `writer` (psycopg's public `LibpqWriter`, which sends it on the cursor's
    connection): `write` queues the data in blocks of COPY_BLOCK bytes (views, not copies) and
    returns, unless `blocks` of them wait for the thread, when it waits for room. psycopg's
    own `QueuedLibpqWriter` does the same with a queue of 1024 blocks, ~128 MB that a reader
    ahead of the server fills (at `huge`, idle: the first import's peak 1504 MB)."""

    def __init__(self, writer: Any, blocks: int = COPY_BLOCKS):
        self._writer = writer
        self.queue: queue.Queue[memoryview | None] = queue.Queue(blocks)
        self._error: BaseException | None = None
        self._dropping = False  # finish(exc): what is still queued is not sent
        self._thread = threading.Thread(target=self._send, name="rosterdrop-copy", daemon=True)
        self._thread.start()

    def _send(self) -> None:
        # Takes every block to the end, even after an error: `write` never waits for it.
        while (block := self.queue.get()) is not None:
            if self._error is None and not self._dropping:
                try:
                    self._writer.write(block)
                except BaseException as error:  # raised by `write` or `finish`
                    self._error = error

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        view = memoryview(data)
        for start in range(0, len(view), COPY_BLOCK):
            self.queue.put(view[start : start + COPY_BLOCK])

    def finish(self, exc: BaseException | None = None) -> None:
        """End the COPY once every block is sent; given `exc`, abandon it (the server is told
        why, `LibpqWriter.finish`), the blocks still queued not sent."""
        self._dropping = exc is not None
        self.queue.put(None)
        self._thread.join()
        self._writer.finish(exc or self._error)
        if self._error is not None and exc is None:
            raise self._error


class _Stopped(Exception):
    """A Loader closed before it finished: nothing more is copied."""


def loads_while_reading() -> bool:
    """Whether a first import's records are copied while its files are read (`Loader`)."""
    return _is_postgres()


@timed("finish load")
def finish_load(cur: Cursor, entity: str, loaded: Loaded, added: Any) -> bool:
    """After a Loader copied an entity's records: delete those the plan does not add (`added`:
    the row numbers it adds), then build the unique key (every other index is built after the
    sync, `build_missing_indexes`). The table's statistics are made there, as
    `lookups_built_after` makes them, when at least DEFER_LOOKUPS_MIN records were added;
    otherwise after the commit by `refresh_statistics`, as for any apply (a small table's
    statistics changed the plans of the gaps counted after the sync: `users_in_no_school`'s
    `NOT IN` over 530k roles at `huge`, hashed without them, was planned as a scan of them
    per user with them). Whether they were made."""
    # A mask, not np.setdiff1d, which sorts both (5M enrollments: seconds of the client's CPU
    # while the server waits for the DELETE and the builds after it).
    kept = np.zeros(loaded.rows, dtype=bool)
    kept[np.asarray(added, dtype=np.int64)] = True
    refused = np.flatnonzero(~kept)
    if len(refused):
        cur.execute(
            f"DELETE FROM {table(entity)} WHERE id = ANY(%s)",
            [loaded.ids(refused).tolist()],
        )
    analyze = len(added) >= DEFER_LOOKUPS_MIN
    _build_in_transaction(cur, entity, list(MODELS[entity]._meta.constraints), analyze)
    return analyze
