"""The roster's content hashes, kept beside the database as a file per district and token.

A re-import compares the upload against (entity, key, key hash, content hash, status) for
every record, plus a hash of its natural key where the entity has one (enrollments: class,
person, role), and apply seeks the records it updates or removes by their row ID where the
snapshot knows it (store.ROW_ID: null for a record a sync's apply added, unless a first
import's Loader told it, until a rebuild); reading millions of rows back through the database
driver costs more than the whole comparison, so the snapshot is saved after each applied
sync and named by the district's roster token. A missing or stale file is rebuilt from the database.

With shared storage (S3, `storage.shared`), the snapshot and what it vouches for are also kept
there when published, so that a worker on another host fetches the one the last sync wrote
(checked against its sha256) instead of rebuilding it; this host's file is then a cache, named
by the token, whose content a token never changes. What it vouches for may change under the
same token (a sync that found nothing to change), so it is read from storage each time. Older
tokens' objects are deleted as their files are.

What matches records by hash reads the file's hash columns only, memory-mapped; the key strings
of the few records that need them are read a batch at a time and let go (memory-mapped, taking
a hundred thousand keys spread over 5M touched every page of them: 450 MB more resident).
"""

import contextlib
import itertools
import json
import logging
import mmap
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.ipc
from django.conf import settings

from rosterdrop import process, storage
from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES
from rosterdrop.roster.schema import KEY
from rosterdrop.timing import timed

log = logging.getLogger(__name__)

COLUMNS = list(store.SNAPSHOT_SCHEMA)
FOLDER = "roster"


def _folder() -> Path:
    return settings.DATA_DIR / FOLDER


def _prefix(district_id: int) -> str:
    """What the names of a district's snapshots, and what they vouch for, begin with."""
    return f"{FOLDER}/{int(district_id)}-t"


def keys(district_id: int, token: int) -> tuple[str, str]:
    """The snapshot kept for `token` and what it vouches for, as keys relative to the data
    folder and in shared storage alike (what a backup copies)."""
    start = f"{_prefix(district_id)}{int(token)}"
    return f"{start}.arrow", f"{start}.vouched.json"


def _path(district_id: int, token: int) -> Path:
    return settings.DATA_DIR / keys(district_id, token)[0]


def _vouched_path(district_id: int, token: int) -> Path:
    return settings.DATA_DIR / keys(district_id, token)[1]


class Snapshot:
    """The district's snapshot for one token, opened once for everything an import reads of
    it: rebuilt from the database first if missing or written by another version (other
    columns, or not grouped by entity).

    The file stays open, so an import reads one snapshot throughout even if a newer one
    replaces it. What matches records by hash maps the file for its hash columns only, for
    as long as it uses them (every page of a mapping read through stays resident until it is
    unmapped); key strings and whole batches are read a record batch at a time and let go
    (taking a hundred thousand keys spread over 5M from a mapping touched every page of them:
    450 MB more resident).
    """

    def __init__(self, district_id: int, token: int):
        self.district_id, self.token = district_id, token
        path = _path(district_id, token)
        if not self._open(path) and not (_fetch(district_id, token) and self._open(path)):
            log.info("rebuilding the snapshot %s-t%s from the database", district_id, token)
            with store.bulk_connection() as cur:
                frame = store.snapshot(cur, district_id).sort("entity", maintain_order=True)
            save(district_id, token, frame)
            self._open(path)

    def _open(self, path: Path) -> bool:
        """Open the file; whether it holds a snapshot as this version writes it."""
        try:
            # Mapped from the open file itself, as it is read: the same inode throughout.
            self._file = open(path, "rb")  # noqa: SIM115 -- open as long as the object lives
        except FileNotFoundError:
            return False
        try:
            self._reader = pa.ipc.open_file(pa.PythonFile(self._file, mode="r"))
            table = self._mapped()
        except pa.ArrowInvalid:
            table = None
        if table is None or table.column_names != COLUMNS:
            self._file.close()
            return False
        codes = _entity_codes(table.column("entity"))
        if codes is None or (codes[1:] < codes[:-1]).any():
            self._file.close()
            return False
        self._batch_starts = np.cumsum([0, *(len(b) for b in table.to_batches())])
        # entity -> (start, end) of its records in the file: between where each run of one
        # code starts (none in an empty file).
        runs = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        bounds = [0, *runs.tolist(), len(codes)] if len(codes) else []
        self.ranges = {
            ENTITIES[codes[start]]: (start, end) for start, end in itertools.pairwise(bounds)
        }
        return True

    def _mapped(self) -> pa.Table:
        """The file's records, memory-mapped: nothing is read until it is used."""
        mapping = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return pa.ipc.open_file(pa.py_buffer(mapping)).read_all()

    @timed("frame")
    def frame(self, keys: bool = True) -> pl.DataFrame:
        """The whole snapshot, its records grouped by entity; without the key strings and
        row IDs unless `keys` (a fifth of the memory, and 8 bytes a record more)."""
        columns = COLUMNS if keys else [c for c in COLUMNS if c not in (KEY, store.ROW_ID)]
        return _frame(self._mapped(), columns)

    def entities(self) -> Iterator[tuple[str, "Records"]]:
        """Each entity's records in turn: one entity's hashes in memory at a time."""
        table = self._mapped()
        for entity, (start, end) in self.ranges.items():
            yield entity, Records(_frame(table.slice(start, end - start), HASHED), entity, self)

    def active_keys(self, entity: str) -> pl.Series:
        """The keys of the entity's active records."""
        start, end = self.ranges[entity]
        status = _frame(self._mapped().slice(start, end - start), ["status"])["status"]
        return self.keys(entity, np.flatnonzero((status == "active").to_numpy()))

    def keys(self, entity: str, positions: npt.ArrayLike) -> pl.Series:
        """The source IDs of the entity's records at these positions (among its own), in the
        order given."""
        rows = np.asarray(positions, dtype=np.int64)
        if entity not in self.ranges or not len(rows):
            return pl.Series(KEY, [], pl.String)
        rows = rows + self.ranges[entity][0]
        order = np.argsort(rows, kind="stable")
        batch_of = np.searchsorted(self._batch_starts, rows[order], side="right") - 1
        taken = []
        for batch in np.unique(batch_of):
            wanted = rows[order][batch_of == batch] - self._batch_starts[batch]
            keys = self._reader.get_batch(int(batch)).column(KEY)
            taken.append(
                cast(pl.Series, pl.from_arrow(keys.take(pa.array(wanted, type=pa.int64()))))
            )
        return pl.concat(taken).gather(np.argsort(order)).cast(pl.String).alias(KEY)

    def parts(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        """The snapshot a record batch at a time, each batch split by entity, in order:
        (entity, its records in the batch), as Arrow read them. Never whole in memory."""
        for i in range(self._reader.num_record_batches):
            batch = self._reader.get_batch(i)
            entity = batch.column("entity")
            names = np.array(entity.dictionary.to_pylist(), dtype=object)
            codes = entity.indices.to_numpy(zero_copy_only=False)
            # An entity's records are together: each run of one code is one part.
            starts = np.flatnonzero(np.diff(codes, prepend=-1))
            for start, end in zip(starts, [*starts[1:], len(codes)], strict=True):
                yield str(names[codes[start]]), batch.slice(start, end - start)

    @property
    def vouched(self) -> dict[str, str]:
        """Entity -> the context in which all the roster's records of it were checked
        (ingest/vouched.py); nothing if not known, as for a snapshot rebuilt from the
        database."""
        shared = storage.shared()
        with contextlib.suppress(FileNotFoundError, ValueError):
            if shared is None:
                text = _vouched_path(self.district_id, self.token).read_bytes()
            else:
                text = shared.read(keys(self.district_id, self.token)[1])
            vouched: dict[str, str] = json.loads(text)
            return vouched
        return {}


def _fetch(district_id: int, token: int) -> bool:
    """Fetch the snapshot for `token` from shared storage into this host's file; whether it
    was there, whole. This host's snapshots of other tokens go (a host keeps one per
    district, as the one that wrote them does)."""
    shared = storage.shared()
    if shared is None:
        return False
    key, path = keys(district_id, token)[0], _path(district_id, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = process.mkstemp(f"{int(district_id)}-", path.parent, suffix=".tmp")
    os.close(fd)
    os.unlink(name)
    try:
        shared.get_file(key, Path(name))
    except FileNotFoundError:
        return False
    except OSError as error:  # damaged, or storage unreachable: rebuilt instead
        log.warning("snapshot %s not fetched from storage: %s", key, error)
        Path(name).unlink(missing_ok=True)
        return False
    os.replace(name, path)
    _drop_others(district_id, (path, _vouched_path(district_id, token)))
    log.info("fetched the snapshot %s from storage", key)
    return True


def _drop_others(district_id: int, kept: tuple[Path, ...]) -> None:
    """Delete this host's files of the district's other tokens."""
    for old in _folder().glob(f"{int(district_id)}-t*"):
        if old not in kept:
            old.unlink(missing_ok=True)


# What a plan compares: the snapshot's columns but the entity and the key strings.
HASHED = [c for c in COLUMNS if c not in ("entity", KEY)]


def _frame(table: pa.Table, columns: list[str]) -> pl.DataFrame:
    frame = cast(pl.DataFrame, pl.from_arrow(table.select(columns)))
    return frame.cast({c: store.SNAPSHOT_SCHEMA[c] for c in columns})


def entity_slices(snapshot: pl.DataFrame) -> Iterator[tuple[str, pl.DataFrame]]:
    """Each entity's records in turn, in snapshot order, without the entity column.

    Slices, not filters: the records of an entity are together, and a filtered copy of
    millions of keys would cost hundreds of MB beside the snapshot.
    """
    codes = snapshot["entity"].to_physical()
    names = cast(pl.Enum, snapshot.schema["entity"]).categories
    for code in codes.unique(maintain_order=True).to_list():
        start = codes.search_sorted(code, side="left")
        end = codes.search_sorted(code, side="right")
        yield names[code], snapshot.slice(start, end - start).drop("entity")


@dataclass
class Records:
    """The roster's records of one entity as a plan compares with them: their hashes,
    statuses and row IDs in memory (`frame`: _keyhash, _hash, status, _natural, _rowid), their
    key strings read
    from the snapshot file only for the positions asked for."""

    frame: pl.DataFrame
    entity: str = ""
    snapshot: Snapshot | None = None

    def keys(self, positions: npt.ArrayLike) -> pl.Series:
        """The source IDs of the records at these positions (of `frame`)."""
        if self.snapshot is None:
            return pl.Series(KEY, [], pl.String)
        return self.snapshot.keys(self.entity, positions)

    def ids(self, positions: npt.ArrayLike) -> pl.Series:
        """The row IDs (store.ROW_ID, null where not known) of the records at these positions
        (of `frame`), in the order given."""
        return self.frame[store.ROW_ID].gather(np.asarray(positions, dtype=np.int64))


def _entity_codes(column: pa.ChunkedArray) -> np.ndarray | None:
    """Each record's entity as its place in ENTITIES, from the dictionary codes as mapped
    (each batch's dictionary looked up once): not cast as a column of 6.8M values at `huge`
    (~0.08 s of CPU every import). None if a name is not an entity of this version."""
    if not pa.types.is_dictionary(column.type):  # written by another version
        column = column.dictionary_encode()
    parts = []
    for chunk in column.chunks:
        try:
            names = chunk.dictionary.to_pylist()
            places = np.array([ENTITIES.index(n) for n in names], dtype=np.uint8)
        except ValueError:
            return None
        parts.append(places[chunk.indices.to_numpy(zero_copy_only=False)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def none() -> Records:
    """An entity's records when the roster has none."""
    return Records(pl.DataFrame(schema={c: store.SNAPSHOT_SCHEMA[c] for c in HASHED}))


@timed("stage snapshot")
def stage(district_id: int, parts: Iterable[pl.DataFrame | pa.RecordBatch]) -> Path:
    """Write a snapshot, part after part, under a temporary name; `publish` names it once
    its roster is committed. Parts in Arrow are written as they are (read from a snapshot)."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = process.mkstemp(f"{int(district_id)}-", folder, suffix=".tmp")
    os.close(fd)
    schema = pl.DataFrame(schema=store.SNAPSHOT_SCHEMA).to_arrow().schema
    with pa.OSFile(name, "wb") as sink:
        writer = pa.ipc.new_file(sink, schema)
        for part in parts:
            if isinstance(part, pl.DataFrame):
                part = part.select(COLUMNS).cast(pl.Schema(store.SNAPSHOT_SCHEMA)).to_arrow()
            elif not part.schema.equals(schema):  # written by another version
                part = pa.Table.from_batches([part]).cast(schema)
            if len(part):
                writer.write(part)
        writer.close()
    return Path(name)


def publish(district_id: int, token: int, staged: Path, vouched: dict[str, str]) -> None:
    """Name a staged snapshot for `token`, with what it vouches for, and drop older ones
    (those staged by a killed import are ingest.recovery's)."""
    path = _path(district_id, token)
    vouch(district_id, token, vouched)
    staged.replace(path)
    _drop_others(district_id, (path, _vouched_path(district_id, token)))
    shared = storage.shared()
    if shared is not None:
        with _shared_failure_logged(path):
            shared.put_file(keys(district_id, token)[0], path)
            shared.delete_others(_prefix(district_id), keys(district_id, token))


@contextlib.contextmanager
def _shared_failure_logged(path: Path) -> Iterator[None]:
    """A snapshot not kept in shared storage is no loss (the roster it describes is
    committed, and another host rebuilds it): said in the log, never the sync's failure."""
    try:
        yield
    except Exception as error:
        log.warning("snapshot %s not kept in shared storage: %s", path.name, error)


def vouch(district_id: int, token: int, vouched: dict[str, str]) -> None:
    """Keep what the roster at `token` vouches for (written whole, then named)."""
    path = _vouched_path(district_id, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = process.mkstemp(f"{int(district_id)}-", path.parent, suffix=".tmp")
    data = json.dumps(vouched).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(name, path)
    shared = storage.shared()
    if shared is not None:
        with _shared_failure_logged(path):
            shared.put(keys(district_id, token)[1], data)


@timed("save")
def save(district_id: int, token: int, frame: pl.DataFrame) -> None:
    """Write the snapshot for `token`, rebuilt from the database: it vouches for nothing."""
    publish(district_id, token, stage(district_id, [frame]), {})
