"""The roster's content hashes, kept beside the database as a file per district and token.

A re-import compares the upload against (entity, key, hash, status) for every record, plus a
hash of its natural key where the entity has one (enrollments: class, person, role); reading
millions of rows back through the database driver costs more than the whole comparison, so the
snapshot is saved after each applied sync and named by the district's roster token. A
missing or stale file is rebuilt from the database.
"""

import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc
from django.conf import settings

from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES


def _folder() -> Path:
    return settings.DATA_DIR / "roster"


def _path(district_id: int, token: int) -> Path:
    return _folder() / f"{int(district_id)}-t{int(token)}.arrow"


def load(district_id: int, token: int) -> pl.DataFrame:
    """The district's snapshot, its records grouped by entity (`of_entity`, `by_entity`)."""
    path = _path(district_id, token)
    if path.exists():
        # Read whole through pyarrow: polars' read_ipc maps the file and then copies it,
        # which for a few million records briefly takes twice the memory.
        with pa.OSFile(str(path)) as source:
            frame = pl.from_arrow(pa.ipc.open_file(source).read_all())
        if frame.columns == list(store.SNAPSHOT_SCHEMA):
            frame = frame.cast(store.SNAPSHOT_SCHEMA)
            if frame["entity"].is_sorted():
                return frame
    with store.bulk_connection() as cur:
        frame = store.snapshot(cur, district_id).sort("entity", maintain_order=True)
    save(district_id, token, frame)
    return frame


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


def entity_parts(district_id: int, token: int) -> Iterator[tuple[str, pl.DataFrame]]:
    """The saved snapshot a record batch at a time, each batch split by entity, in order:
    (entity, its records in the batch). Never whole in memory."""
    path = _path(district_id, token)
    # A file gone meanwhile: whatever the database now holds.
    batches = _batches(path) if path.exists() else [load(district_id, token)]
    for batch in batches:
        codes = batch["entity"].to_physical()
        for code in codes.unique(maintain_order=True).to_list():
            yield ENTITIES[code], batch.filter(codes == code)


def _batches(path: Path) -> Iterator[pl.DataFrame]:
    with pa.OSFile(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield pl.from_arrow(reader.get_batch(i)).cast(store.SNAPSHOT_SCHEMA)


def by_entity(district_id: int, token: int) -> Iterator[tuple[str, pl.DataFrame]]:
    """Each entity's records in turn, without the entity column: one entity in memory at a
    time, not the whole snapshot."""
    for entity, parts in itertools.groupby(entity_parts(district_id, token), key=itemgetter(0)):
        yield entity, pl.concat(part for _, part in parts).drop("entity")


def none() -> pl.DataFrame:
    """An entity's records when the roster has none (as `by_entity` gives them)."""
    return pl.DataFrame(schema=store.SNAPSHOT_SCHEMA).drop("entity")


def stage(district_id: int, parts: Iterable[pl.DataFrame]) -> Path:
    """Write a snapshot, part after part, under a temporary name; `publish` names it once
    its roster is committed."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f"{int(district_id)}-", suffix=".tmp")
    os.close(fd)
    empty = pl.DataFrame(schema=store.SNAPSHOT_SCHEMA)
    with pa.OSFile(name, "wb") as sink:
        writer = pa.ipc.new_file(sink, empty.to_arrow().schema)
        for frame in parts:
            if frame.height:
                writer.write_table(frame.cast(store.SNAPSHOT_SCHEMA).to_arrow())
        writer.close()
    return Path(name)


# A staged snapshot older than this was left by an import that was killed (a live one is
# published within minutes of staging): its hundreds of MB are deleted at the next publish.
STALE_STAGED_SECONDS = 24 * 3600


def publish(district_id: int, token: int, staged: Path) -> None:
    """Name a staged snapshot for `token` and drop older ones, and stale staged ones."""
    path = _path(district_id, token)
    staged.replace(path)
    for old in _folder().glob(f"{int(district_id)}-t*.arrow"):
        if old != path:
            old.unlink(missing_ok=True)
    cutoff = time.time() - STALE_STAGED_SECONDS
    for left in _folder().glob(f"{int(district_id)}-*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if left.stat().st_mtime < cutoff:
                left.unlink()


def save(district_id: int, token: int, frame: pl.DataFrame) -> None:
    """Write the snapshot for `token` and drop older ones."""
    publish(district_id, token, stage(district_id, [frame]))
