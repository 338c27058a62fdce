"""Spill: the record data of one entity, kept on disk from reading until apply.

Split by key range into a few files, so that apply can write new records in key order one
range at a time: the roster's unique index then grows by appending instead of at random
(measured on 6.8M records: about 40% less time than in file order), while only one range is
in memory at once. The ranges are cut at quantiles of the first batch's keys; a range that
grew too large (keys arriving sorted, say) is read back batch by batch instead.

Records already in the roster exactly as they arrive are not spilled: apply never writes them.
They are recognised by a 64-bit fingerprint of key and content hash, and each is told which
roster record it matched (SAME) so that the plan can confirm it exactly instead of joining
millions of keys. Should two fingerprints ever collide, the plan finds the match false, plans
the record as a change, and apply, not finding it spilled, fails with nothing applied.
"""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc

from rosterdrop.ingest.columns import HASH, KEY, KEYHASH, RECORD, ROW, SAME
from rosterdrop.ingest.lookup import HashIndex, guessed
from rosterdrop.ingest.mapping import stored_columns
from rosterdrop.roster.hashes import entity_slices
from rosterdrop.timing import timed

RANGES = 16
FINGERPRINT_SEED = 20261124
# A range file larger than this is read back a batch at a time.
MAX_RANGE_BYTES = 256 << 20
# Spilled rows are written once this many are pending (or as the spill closes): a nightly
# change spills a few hundred rows per batch, and each write cut them into up to RANGES Arrow
# tables (5.2M enrollments with 1% changed: 0.65 s CPU in ~80 writes of ~1k rows).
WRITE_ROWS = 1 << 16
# A file's kept records are matched with the roster in order (`Spill.match`) this many at a
# time: 5.2M kept enrollments at once cost ~0.3-0.4 s CPU, mostly waiting on memory, against
# ~0.14 s a block at a time.
MATCH_ROWS = 1 << 17


def fingerprints(frame: pl.DataFrame) -> np.ndarray:
    """One number per record for its key and content hash together (columns _keyhash,
    _hash): two numbers hashed, not a string."""
    return frame.select(pl.struct(KEYHASH, HASH).hash(FINGERPRINT_SEED)).to_series().to_numpy()


@dataclass(frozen=True)
class Held:
    """The roster's active records of one entity, by fingerprint."""

    fingerprints: HashIndex
    # Of each, among the roster's records of the entity (active or not): 32-bit, as SAME is.
    # Every entity's are held through the read (5M enrollments: 20 MB less at its peak).
    positions: np.ndarray


def _held_by_entity(snapshot: pl.DataFrame) -> Iterator[tuple[str, Held]]:
    """Per entity, in the order of the snapshot, the fingerprints of the roster's active
    records, sorted, and where each is in `snapshot.filter(entity == ...)` (the frame the plan
    compares against)."""
    for entity, records in entity_slices(snapshot):
        positions = np.flatnonzero((records["status"] == "active").to_numpy())
        if not len(positions):
            continue
        # Sorted together with their positions, in one polars sort: 5M in 0.26 s, against
        # 0.7-0.8 s for numpy's argsort and two gathers.
        mine = fingerprints(records)[positions]
        pairs = pl.DataFrame({"f": mine, "p": positions.astype(np.uint32)}).sort("f")
        yield entity, Held(HashIndex(pairs["f"].to_numpy()), pairs["p"].to_numpy())


class Fingerprinting:
    """The roster's fingerprints made in a thread, an entity at a time, while the first files
    are read (the snapshot is grouped in the order files usually come: enrollments last); the
    spill of an entity waits for its own (6.8M records: 0.7-0.9 s no longer before reading)."""

    def __init__(self, snapshot: pl.DataFrame):
        self._held: dict[str, Held] = {}
        self._done: set[str] = set()
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        threading.Thread(
            target=self._make, args=(snapshot,), name="rosterdrop-fingerprints", daemon=True
        ).start()

    def _make(self, snapshot: pl.DataFrame) -> None:
        names = cast(pl.Enum, snapshot.schema["entity"]).categories
        try:
            for entity, held in _held_by_entity(snapshot):
                with self._changed:
                    self._held[entity] = held
                    self._done.add(entity)
                    self._changed.notify_all()
        except BaseException as error:  # raised where the fingerprints are asked for
            self._error = error
        finally:
            with self._changed:
                self._done.update(names)
                self._changed.notify_all()

    def pop(self, entity: str, default: Held | None = None) -> Held | None:
        with self._changed:
            self._changed.wait_for(lambda: entity in self._done)
            if self._error is not None:
                raise self._error
            return self._held.pop(entity, default)


@dataclass
class SpillFolder:
    """Where an import spills, and what it need not spill (per entity, sorted fingerprints)."""

    path: Path
    unchanged: dict[str, Held] | Fingerprinting = field(default_factory=dict)
    # Also handed every batch spilled (entity, KEY, fields, metadata, HASH, ROW): a first
    # import's records copied into the roster while the files are read (store.Loader), which
    # says whether they went to the roster: then they are not written here.
    copy: Callable[[str, pl.DataFrame], bool] | None = None

    def open(self, entity: str) -> "Spill":
        """The entity's spill, handed its fingerprints (they go when it is closed)."""
        return Spill(self.path, entity, self.unchanged.pop(entity, None), self.copy)


@dataclass
class Pending:
    """Frames held until `rows` of them wait, so that a file is written in a few large batches
    rather than one small one per batch read (a nightly change's batches carry a few hundred
    changed rows each)."""

    rows: int
    _frames: list[pl.DataFrame] = field(default_factory=list)
    _held: int = 0

    def add(self, frame: pl.DataFrame) -> bool:
        """Hold `frame`; whether `rows` or more now wait."""
        self._frames.append(frame)
        self._held += frame.height
        return self._held >= self.rows

    def take(self, rechunk: bool = False) -> pl.DataFrame | None:
        """Every frame held, as one (None when none is), and none held after."""
        if not self._frames:
            return None
        frame = pl.concat(self._frames, how="vertical_relaxed", rechunk=rechunk)
        self.clear()
        return frame

    def clear(self) -> None:
        self._frames, self._held = [], 0


class Spill:
    """`unchanged`: the records the roster holds, by fingerprint (those are not spilled)."""

    def __init__(
        self,
        folder: Path,
        entity: str,
        unchanged: Held | None = None,
        copy: Callable[[str, pl.DataFrame], bool] | None = None,
    ):
        self.folder, self.entity, self.copy = folder, entity, copy
        empty = unchanged is None or not len(unchanged.fingerprints)
        self.unchanged = None if empty else unchanged
        self.rows = 0  # every row numbered, spilled or not
        self.spilled = 0
        self._bounds: pl.Series | None = None
        self._writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self._pending = Pending(WRITE_ROWS)

    def _path(self, part: int) -> Path:
        return self.folder / f"{self.entity}-{part:03d}.arrow"

    def match(self, mapped: pl.DataFrame, in_order: bool = False) -> pl.Series | None:
        """Each record's SAME: the position of the roster record its fingerprint matched
        (null: none); None if the roster holds no records of this entity. `in_order`: the
        records are mostly in the roster's order (a file's kept lines, in the order of the
        lines that wrote most of those records), so most are found at the place after the
        one before them (lookup.guessed), not looked up all over the fingerprints' index
        (2M kept enrollments: 0.35 s CPU)."""
        if self.unchanged is None:
            return None
        mine = fingerprints(mapped.select(KEYHASH, HASH))
        if not in_order:
            return self._held_as_is(mine)
        held = self.unchanged
        # The active records' fingerprints by place, 0 where none is active: a record whose
        # fingerprint is 0 is never taken as guessed there, but looked up.
        by_place = np.zeros(int(held.positions.max()) + 1, dtype=np.uint64)
        by_place[held.positions] = held.fingerprints.hashes

        def look_up(block: np.ndarray, at: np.ndarray) -> np.ndarray:
            found = held.fingerprints.find(block[at])
            hit = found >= 0
            found[hit] = held.positions[found[hit]]
            return found

        def agree(block: np.ndarray, at: np.ndarray, place: np.ndarray) -> np.ndarray:
            theirs = block[at]
            right: np.ndarray = (by_place[place] == theirs) & (theirs != 0)
            return right

        # A block of MATCH_ROWS at a time (a view of `mine`): guessing walks a dozen arrays as
        # long as the records, which then stay in cache.
        blocks = (mine[start : start + MATCH_ROWS] for start in range(0, len(mine), MATCH_ROWS))
        guesses = [
            guessed(len(block), len(by_place), partial(look_up, block), partial(agree, block))
            for block in blocks
        ]
        position = np.concatenate([np.zeros(0, dtype=np.int64), *guesses])
        return pl.Series(SAME, position, dtype=pl.Int64).replace(-1, None).cast(pl.UInt32)

    @timed("spill", batch=True)
    def write(
        self, mapped: pl.DataFrame, places: np.ndarray | None = None, numbered: int | None = None
    ) -> pl.Series | None:
        """Keep the batch's key, data and hash, with the row numbers the checks gave them.

        Returns, if the roster holds records of this entity, each row's SAME: the position
        of the roster record its fingerprint matched (null: none, the row was spilled).
        Rows that come with a SAME already (ingest/vouched.py) keep it; a batch of such rows
        only (ingest/lines.py) may come without their data (RECORD).

        `places`: where each row is among the `numbered` rows this batch numbers, the others
        being records taken as the roster holds them (ingest/lines.py: numbered, never sent
        here); by default the batch's rows are all of them, in order.
        """
        first = self.rows
        self.rows += mapped.height if numbered is None else numbered
        same = None
        spilled = np.arange(mapped.height)
        if self.unchanged is not None:
            same = (
                mapped[SAME]
                if SAME in mapped.columns
                else pl.repeat(None, mapped.height, dtype=pl.UInt32, eager=True).alias(SAME)
            )
            spilled = np.flatnonzero(same.is_null().to_numpy())
            if len(spilled):
                found = self._held_as_is(fingerprints(mapped[spilled].select(KEYHASH, HASH)))
                same = same.scatter(spilled, found)
                spilled = spilled[found.is_null().to_numpy()]
        self.spilled += len(spilled)
        if len(spilled):
            rows = mapped if len(spilled) == mapped.height else mapped[spilled]
            at = spilled if places is None else places[spilled]
            frame = rows.select(KEY, RECORD, HASH, KEYHASH).with_columns(
                pl.Series(ROW, first + at, dtype=pl.UInt32)
            )
            self._write(frame)
        return same

    def _write(self, frame: pl.DataFrame) -> None:
        record = cast(pl.Struct, frame.schema[RECORD])
        frame = frame.select(KEY, *stored_columns(self.entity, record), HASH, ROW)
        if self.copy is not None and self.copy(self.entity, frame):
            # In the roster's table already, where apply leaves them (a first import at
            # `huge`: ~1 GB of Arrow not written); only their counts are asked for.
            return
        if self._pending.add(frame):
            self._flush()

    def _flush(self) -> None:
        """Write the pending rows to their key ranges' files."""
        frame = self._pending.take()
        if frame is None:
            return
        if self._bounds is None:
            keys = frame[KEY].sort()
            picks = [keys[len(keys) * i // RANGES] for i in range(1, RANGES)]
            self._bounds = pl.Series(picks, dtype=pl.String).unique().sort()
        part = self._bounds.search_sorted(frame[KEY], side="right").alias("_part")
        for (index,), rows in frame.with_columns(part).partition_by("_part", as_dict=True).items():
            # Plain (not view) strings: picking a few rows later copies just those rows' bytes.
            table = rows.drop("_part").to_arrow(compat_level=pl.CompatLevel.oldest())
            if index not in self._writers:
                self._writers[index] = pa.ipc.new_file(str(self._path(index)), table.schema)
            self._writers[index].write_table(table)

    def _held_as_is(self, mine: np.ndarray) -> pl.Series:
        """For each fingerprint, the position of the roster record that has it (or null)."""
        held = self.unchanged
        assert held is not None  # asked only of a spill that holds fingerprints
        found = held.fingerprints.find(mine)
        hit = found >= 0
        position = np.full(len(mine), -1, dtype=np.int64)
        position[hit] = held.positions[found[hit]]
        return pl.Series(SAME, position, dtype=pl.Int64).replace(-1, None).cast(pl.UInt32)

    def close(self) -> None:
        """No more writes: the roster's fingerprints (16 bytes a record) can go."""
        self.unchanged = None
        self._flush()
        while self._writers:
            self._writers.popitem()[1].close()

    def ranges(self) -> Iterator[pa.Table]:
        """The spilled rows in ascending key ranges (each range unsorted inside)."""
        for part in range(len(self._bounds) + 1 if self._bounds is not None else 0):
            path = self._path(part)
            if not path.exists():
                continue
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source)
                if path.stat().st_size <= MAX_RANGE_BYTES:
                    yield reader.read_all()
                    continue
                for i in range(reader.num_record_batches):
                    yield pa.Table.from_batches([reader.get_batch(i)])
