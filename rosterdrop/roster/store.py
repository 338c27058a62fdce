"""Bulk reads and writes of the roster table, column-wise, on Django's own connection.

The ORM is for everything else; the roster moves in bulk: a district's (key, hash, status)
snapshot is read in one query, and only changed records are written, with each database's
bulk path (COPY on PostgreSQL, executemany on SQLite) inside the caller's transaction.
The same connection is used on purpose: a second SQLite library in the process (as an ADBC
driver would bring) breaks SQLite's file locking.
"""

from collections.abc import Iterable
from contextlib import contextmanager
from datetime import datetime

import polars as pl
from django.db import connection, transaction

from rosterdrop.roster.models import Record

TABLE = Record._meta.db_table


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def bulk_connection():
    """One transaction on Django's connection; yields a raw DB-API cursor."""
    with transaction.atomic(), connection.cursor() as wrapper:
        yield wrapper.cursor


def sql_time(moment: datetime) -> str:
    """A timestamp literal the way Django stores it on this database."""
    return str(connection.ops.adapt_datetimefield_value(moment))


def json_value(column: str) -> str:
    return f"CAST({column} AS jsonb)" if _is_postgres() else column


def _param() -> str:
    return "%s" if _is_postgres() else "?"


def _load(cur, table: str, columns: list[str], rows: Iterable[tuple]) -> None:
    """Append rows with the database's bulk path."""
    names = ", ".join(columns)
    if _is_postgres():
        with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


def _stage(cur, name: str, frame: pl.DataFrame) -> str:
    """A temporary table holding `frame` (text and bigint columns)."""
    types = {pl.Int64: "BIGINT", pl.UInt32: "BIGINT"}
    cols = ", ".join(f"{c} {types.get(t, 'TEXT')}" for c, t in frame.schema.items())
    cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"CREATE TEMPORARY TABLE {name} ({cols})")
    _load(cur, name, frame.columns, frame.iter_rows())
    return name


def snapshot(cur, district_id: int) -> pl.DataFrame:
    """Every record of the district: entity, key, content hash and status."""
    cur.execute(
        f"SELECT entity, sourced_id, content_hash, status FROM {TABLE} "
        f"WHERE district_id = {int(district_id)}"
    )
    return pl.DataFrame(
        cur.fetchall(),
        schema={"entity": pl.String, "_key": pl.String, "_hash": pl.Int64, "status": pl.String},
        orient="row",
    )


def old_data(cur, district_id: int, entity: str, keys: pl.DataFrame) -> pl.DataFrame:
    """Stored JSON of the given keys (column _key), for field-level before/after."""
    staged = _stage(cur, "rd_keys", keys)
    data = "r.data::text" if _is_postgres() else "r.data"
    cur.execute(
        f"SELECT r.sourced_id, {data} FROM {TABLE} r JOIN {staged} s "
        f"ON r.sourced_id = s._key WHERE r.district_id = {int(district_id)} "
        f"AND r.entity = '{entity}'"
    )
    return pl.DataFrame(cur.fetchall(), schema={"_key": pl.String, "_old": pl.String}, orient="row")


def write_records(
    cur,
    district_id: int,
    entity: str,
    sync_id: int,
    now: datetime,
    *,
    added: pl.DataFrame,
    changed: pl.DataFrame,
    removed: pl.DataFrame,
) -> None:
    """Insert added records, rewrite changed/reactivated ones, mark removed ones tobedeleted.

    `added` and `changed` have columns _key, _data, _hash; `removed` has _key.
    """
    where = f"{TABLE}.district_id = {int(district_id)} AND {TABLE}.entity = '{entity}'"
    stamp = f"changed_sync_id = {int(sync_id)}, changed_at = '{sql_time(now)}'"
    if added.height:
        when = sql_time(now)
        _load(
            cur,
            TABLE,
            ["district_id", "entity", "sourced_id", "status", "data", "content_hash",
             "first_seen_sync_id", "changed_sync_id", "first_seen_at", "changed_at"],
            (
                (district_id, entity, key, "active", data, digest, sync_id, sync_id, when, when)
                for key, data, digest in added.iter_rows()
            ),
        )  # fmt: skip
    if changed.height:
        staged = _stage(cur, "rd_changed", changed)
        cur.execute(
            f"UPDATE {TABLE} SET status = 'active', data = {json_value('s._data')}, "
            f"content_hash = s._hash, {stamp} FROM {staged} s "
            f"WHERE {where} AND {TABLE}.sourced_id = s._key"
        )
    if removed.height:
        staged = _stage(cur, "rd_removed", removed)
        cur.execute(
            f"UPDATE {TABLE} SET status = 'tobedeleted', {stamp} FROM {staged} s "
            f"WHERE {where} AND {TABLE}.sourced_id = s._key"
        )


def insert_rows(cur, table: str, columns: list[str], rows: Iterable[tuple]) -> None:
    """Append rows to an app table with the bulk path."""
    _load(cur, table, columns, rows)


def update_row(cur, table: str, row_id: int, values: dict, json_columns: tuple[str, ...] = ()):
    """Update one row of an app table inside the bulk transaction."""
    p = _param()
    sets = ", ".join(f"{c} = {json_value(p) if c in json_columns else p}" for c in values)
    cur.execute(f"UPDATE {table} SET {sets} WHERE id = {int(row_id)}", list(values.values()))
