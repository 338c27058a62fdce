"""Spill: the record data of one entity, kept on disk from reading until apply.

Split by key range into a few files, so that apply can write new records in key order one
range at a time: the roster's unique index then grows by appending instead of at random
(measured on 6.8M records: about 40% less time than in file order), while only one range is
in memory at once. The ranges are cut at quantiles of the first batch's keys; a range that
grew too large (keys arriving sorted, say) is read back batch by batch instead.

Records already in the roster exactly as they arrive are not spilled: apply never writes them.
They are recognised by a 64-bit fingerprint of key and content hash; should two fingerprints
ever collide, apply finds a record it must write missing and fails with nothing applied.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc

from rosterdrop.ingest.keys import ROW
from rosterdrop.ingest.mapping import HASH, KEY, RECORD, record_json

RANGES = 16
FINGERPRINT_SEED = 20261124
# A range file larger than this is read back a batch at a time.
MAX_RANGE_BYTES = 256 << 20


def fingerprints(frame: pl.DataFrame) -> np.ndarray:
    """One number per record for its key and content hash together (columns _key, _hash)."""
    return frame.select(pl.struct(KEY, HASH).hash(FINGERPRINT_SEED)).to_series().to_numpy()


def unchanged_fingerprints(snapshot: pl.DataFrame) -> dict[str, np.ndarray]:
    """Per entity, the sorted fingerprints of the roster's active records."""
    active = (snapshot["status"] == "active").to_numpy()
    every = fingerprints(snapshot)
    entities = snapshot["entity"].to_physical().to_numpy()
    names = snapshot.schema["entity"].categories  # the snapshot's entity is an Enum
    return {
        names[int(code)]: np.sort(every[active & (entities == code)])
        for code in np.unique(entities[active])
    }


@dataclass
class SpillFolder:
    """Where an import spills, and what it need not spill (per entity, sorted fingerprints)."""

    path: Path
    unchanged: dict[str, np.ndarray] = field(default_factory=dict)

    def open(self, entity: str) -> "Spill":
        return Spill(self.path, entity, self.unchanged.get(entity))


class Spill:
    """`unchanged`: sorted fingerprints of records the roster holds as they are (not spilled)."""

    def __init__(self, folder: Path, entity: str, unchanged: np.ndarray | None = None):
        self.folder, self.entity = folder, entity
        self.unchanged = unchanged if unchanged is not None and len(unchanged) else None
        self.rows = 0  # every row numbered, spilled or not
        self.spilled = 0
        self._bounds: pl.Series | None = None
        self._writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}

    def _path(self, part: int) -> Path:
        return self.folder / f"{self.entity}-{part:03d}.arrow"

    def write(self, mapped: pl.DataFrame) -> None:
        """Keep the batch's key, data and hash, with the row numbers the checks gave them."""
        if not mapped.height:
            return
        frame = mapped.select(KEY, RECORD, HASH).with_columns(
            pl.int_range(self.rows, self.rows + mapped.height, dtype=pl.UInt32).alias(ROW)
        )
        self.rows += frame.height
        if self.unchanged is not None:
            frame = frame.filter(pl.Series(~self._held_as_is(fingerprints(frame))))
        self.spilled += frame.height
        if not frame.height:
            return
        frame = frame.select(KEY, record_json(), HASH, ROW)
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

    def _held_as_is(self, mine: np.ndarray) -> np.ndarray:
        """Which of these fingerprints the roster holds."""
        # Searched in ascending order: each search starts near the last (5x faster here).
        order = np.argsort(mine)
        found = np.searchsorted(self.unchanged, mine[order])
        found = np.minimum(found, len(self.unchanged) - 1)
        held = np.empty(len(mine), dtype=bool)
        held[order] = self.unchanged[found] == mine[order]
        return held

    def close(self) -> None:
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
