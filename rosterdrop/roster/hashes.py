"""The roster's content hashes, kept beside the database as a file per district and token.

A re-import compares the upload against (entity, key, key hash, content hash, status) for
every record, plus a hash of its natural key where the entity has one (enrollments: class,
person, role); reading millions of rows back through the database driver costs more than the
whole comparison, so the snapshot is saved after each applied sync and named by the
district's roster token. A missing or stale file is rebuilt from the database.

What matches records by hash reads the file's hash columns only, memory-mapped; the key strings
of the few records that need them are read a batch at a time and let go (memory-mapped, taking
a hundred thousand keys spread over 5M touched every page of them: 450 MB more resident).
"""

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
from django.conf import settings

from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES
from rosterdrop.roster.schema import KEY

COLUMNS = list(store.SNAPSHOT_SCHEMA)


def _folder() -> Path:
    return settings.DATA_DIR / "roster"


def _path(district_id: int, token: int) -> Path:
    return _folder() / f"{int(district_id)}-t{int(token)}.arrow"


def _mapped(path: Path) -> pa.Table:
    """The file's records, memory-mapped: nothing is read until it is used."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _table(district_id: int, token: int) -> pa.Table:
    """The snapshot for `token`: its file, or rebuilt from the database if it is missing or
    was written by another version (other columns, or not grouped by entity)."""
    return _opened(district_id, token)[0]


def _opened(district_id: int, token: int) -> tuple[pa.Table, "KeyReader"]:
    """The snapshot for `token` (as `_table`), and its keys' reader on the same file."""
    path = _path(district_id, token)
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile: rebuilt below
        # The reader first: an open file stays whole even if a newer snapshot replaces it.
        keys = KeyReader(path)
        table = _mapped(path)
        if table.column_names == COLUMNS and _entity_codes(table).is_sorted():
            return table, keys.of(table)
    with store.bulk_connection() as cur:
        frame = store.snapshot(cur, district_id).sort("entity", maintain_order=True)
    save(district_id, token, frame)
    table = _mapped(path)
    return table, KeyReader(path).of(table)


def _entity_codes(table: pa.Table) -> pl.Series:
    """Each record's entity as its position in ENTITIES."""
    entity = pl.from_arrow(table.column("entity"))
    return entity.cast(store.SNAPSHOT_SCHEMA["entity"]).to_physical()


def _frame(table: pa.Table, columns: list[str]) -> pl.DataFrame:
    return pl.from_arrow(table.select(columns)).cast(
        {c: store.SNAPSHOT_SCHEMA[c] for c in columns}
    )


def load(district_id: int, token: int, keys: bool = True) -> pl.DataFrame:
    """The district's snapshot, its records grouped by entity (`of_entity`); without the key
    strings unless `keys`, which is a fifth of the memory."""
    columns = COLUMNS if keys else [c for c in COLUMNS if c != KEY]
    return _frame(_table(district_id, token), columns)


def of_entity(snapshot: pl.DataFrame, entity: str) -> pl.DataFrame:
    """One entity's records, in snapshot order, without the entity column.

    A slice, not a filter: the records of an entity are together, and a filtered copy of
    millions of keys would cost hundreds of MB beside the snapshot.
    """
    codes = snapshot["entity"].to_physical()
    code = ENTITIES.index(entity)  # the entity Enum's physical value
    start = codes.search_sorted(code, side="left")
    end = codes.search_sorted(code, side="right")
    return snapshot.slice(start, end - start).drop("entity")


class KeyReader:
    """A snapshot file read a record batch at a time: its key strings for given records, or
    all its batches in turn."""

    def __init__(self, path: Path):
        self._reader = pa.ipc.open_file(pa.OSFile(str(path)))
        self._starts = np.zeros(1, dtype=np.int64)

    def of(self, table: pa.Table) -> "KeyReader":
        """Told where each record batch starts, from the same file memory-mapped."""
        self._starts = np.cumsum([0, *(len(b) for b in table.to_batches())])
        return self

    def batches(self) -> Iterator[pa.RecordBatch]:
        for i in range(self._reader.num_record_batches):
            yield self._reader.get_batch(i)

    def take(self, rows: np.ndarray) -> pl.Series:
        """The keys of these records (positions in the file), in the order given."""
        order = np.argsort(rows, kind="stable")
        batch_of = np.searchsorted(self._starts, rows[order], side="right") - 1
        taken = []
        for batch in np.unique(batch_of):
            wanted = rows[order][batch_of == batch] - self._starts[batch]
            keys = self._reader.get_batch(int(batch)).column(KEY)
            taken.append(pl.from_arrow(keys.take(pa.array(wanted, type=pa.int64()))))
        keys = pl.concat(taken) if taken else pl.Series(KEY, [], pl.String)
        return keys.gather(np.argsort(order)).cast(pl.String).alias(KEY)


@dataclass
class Records:
    """The roster's records of one entity as a plan compares with them: their hashes and
    statuses in memory (`frame`: _keyhash, _hash, status, _natural), their key strings read
    from the snapshot file only for the positions asked for."""

    frame: pl.DataFrame
    _keys: KeyReader | None = None
    _start: int = 0  # of the entity's records in the file

    def keys(self, positions) -> pl.Series:
        """The source IDs of the records at these positions (of `frame`)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._keys is None or not len(positions):
            return pl.Series(KEY, [], pl.String)
        return self._keys.take(positions + self._start)


def roster_keys(district_id: int, token: int):
    """(entity, positions) -> the keys of the roster's records there, the file opened on the
    first call."""
    opened: list = []

    def keys(entity: str, positions: np.ndarray) -> pl.Series:
        if not opened:
            table, reader = _opened(district_id, token)
            opened.extend([_entity_codes(table), reader])
        codes, reader = opened
        start = codes.search_sorted(ENTITIES.index(entity), side="left")
        return reader.take(np.asarray(positions, dtype=np.int64) + start)

    return keys


def none() -> Records:
    """An entity's records when the roster has none."""
    columns = [c for c in COLUMNS if c not in ("entity", KEY)]
    return Records(pl.DataFrame(schema={c: store.SNAPSHOT_SCHEMA[c] for c in columns}))


def by_entity(district_id: int, token: int) -> Iterator[tuple[str, Records]]:
    """Each entity's records in turn: one entity's hashes in memory at a time."""
    table, keys = _opened(district_id, token)
    codes = _entity_codes(table)
    hashed = [c for c in COLUMNS if c not in ("entity", KEY)]
    for code in codes.unique(maintain_order=True).to_list():
        start = codes.search_sorted(code, side="left")
        part = table.slice(start, codes.search_sorted(code, side="right") - start)
        yield ENTITIES[code], Records(_frame(part, hashed), keys, start)


def entity_parts(district_id: int, token: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The saved snapshot a record batch at a time, each batch split by entity, in order:
    (entity, its records in the batch), as Arrow read them. Never whole in memory: read, not
    memory-mapped, since every page of a mapping read through stays resident until it is
    unmapped."""
    for batch in _opened(district_id, token)[1].batches():
        entity = batch.column("entity")
        names = np.array(entity.dictionary.to_pylist(), dtype=object)
        codes = entity.indices.to_numpy(zero_copy_only=False)
        # An entity's records are together: each run of one code is one part.
        starts = np.flatnonzero(np.diff(codes, prepend=-1))
        for start, end in zip(starts, [*starts[1:], len(codes)], strict=True):
            yield str(names[codes[start]]), batch.slice(start, end - start)


def stage(district_id: int, parts: Iterable[pl.DataFrame | pa.RecordBatch]) -> Path:
    """Write a snapshot, part after part, under a temporary name; `publish` names it once
    its roster is committed. Parts in Arrow are written as they are (read from a snapshot)."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f"{int(district_id)}-", suffix=".tmp")
    os.close(fd)
    schema = pl.DataFrame(schema=store.SNAPSHOT_SCHEMA).to_arrow().schema
    with pa.OSFile(name, "wb") as sink:
        writer = pa.ipc.new_file(sink, schema)
        for part in parts:
            if isinstance(part, pl.DataFrame):
                part = part.select(COLUMNS).cast(store.SNAPSHOT_SCHEMA).to_arrow()
            elif not part.schema.equals(schema):  # written by another version
                part = pa.Table.from_batches([part]).cast(schema)
            if len(part):
                writer.write(part)
        writer.close()
    return Path(name)


# A staged snapshot older than this was left by an import that was killed (a live one is
# published within minutes of staging): its hundreds of MB are deleted at the next publish.
STALE_STAGED_SECONDS = 24 * 3600


def publish(district_id: int, token: int, staged: Path, vouched: dict[str, str]) -> None:
    """Name a staged snapshot for `token`, with what it vouches for, and drop older ones,
    and stale staged ones."""
    path = _path(district_id, token)
    vouch(district_id, token, vouched)
    staged.replace(path)
    kept = (path, _vouched_path(district_id, token))
    for old in _folder().glob(f"{int(district_id)}-t*"):
        if old not in kept:
            old.unlink(missing_ok=True)
    cutoff = time.time() - STALE_STAGED_SECONDS
    for left in _folder().glob(f"{int(district_id)}-*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if left.stat().st_mtime < cutoff:
                left.unlink()


def _vouched_path(district_id: int, token: int) -> Path:
    return _folder() / f"{int(district_id)}-t{int(token)}.vouched.json"


def vouched(district_id: int, token: int) -> dict[str, str]:
    """Entity -> the context in which all the roster's records of it were checked
    (ingest/vouched.py); nothing if not known, as for a snapshot rebuilt from the database
    or still to be."""
    if not _path(district_id, token).exists():
        return {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads(_vouched_path(district_id, token).read_text())
    return {}


def vouch(district_id: int, token: int, vouched: dict[str, str]) -> None:
    """Keep what the roster at `token` vouches for (written whole, then named)."""
    path = _vouched_path(district_id, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{int(district_id)}-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(vouched, f)
    os.replace(name, path)


def save(district_id: int, token: int, frame: pl.DataFrame) -> None:
    """Write the snapshot for `token`, rebuilt from the database: it vouches for nothing."""
    publish(district_id, token, stage(district_id, [frame]), {})
