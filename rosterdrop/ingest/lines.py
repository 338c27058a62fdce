"""An incremental read: the lines of a full file that its last read mapped to records the roster
still holds as they are are neither parsed, checked nor mapped again.

A nightly export is mostly the lines it had the night before. Each line of a file read with
the rows the roster vouches for (ingest/vouched.py; not a first import) is hashed (two 64-bit
hashes of its text as decoded, `read.parse_lines`), and what the line mapped to (key,
references, key and content hashes: the record *before* any check, as vouched.py matches it)
is kept per file beside the roster, named by the roster token it leaves (`LineFiles.publish`,
once the sync is committed).
The next read of the same file takes a line it finds there for that record, untouched, at its
new line number, if the roster still holds the record as it is, active: exactly the rows
vouched.py would have taken without checking them, so the read finds the same issues, plan
and roster as a full one. Every other line is read as before.

A line's bytes are not all its meaning. What else decides it, and what this does about it:

- How it is read (`Layout`): rosterdrop, district, fallback encoding and format spec (the
  vouching context), the file's name, header, delimiter and encoding. Any of them changed,
  the file is read in full (and kept anew).
- Lines that are not rows: only plain pieces (`read._plain_piece`: every line one row, quotes plain)
  are taken line by line; a value spanning lines sends its piece to the full read.
- What a row's preparation reports: a value derived from another column (such files are not
  kept); a status in a bulk file (kept with the line, and counted again when it is taken).
- Other rows and files (duplicate keys, references to records removed meanwhile, a bad row
  keeping its old record): the records taken carry their keys and references on into the
  checks across rows and files, as if read.

With shared storage (S3, `storage.shared`) the kept lines are there, not in the data folder,
so that the next import reads them whichever host runs it: published from the import's work
folder, read back checked against their sha256 (a file read whole, as from the data folder).
"""

import hashlib
import json
import logging
import mmap
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
from django.conf import settings

from rosterdrop import storage
from rosterdrop.ingest.columns import (
    HASH,
    KEY,
    KEYHASH,
    KNOWN,
    LINE,
    LINECHECK,
    LINEHASH,
    STATUS,
)
from rosterdrop.ingest.keys import TARGETS
from rosterdrop.ingest.lookup import HashIndex, sorting_order
from rosterdrop.ingest.spill import Spill

log = logging.getLogger(__name__)

FOLDER = "lines"
# The Arrow schema metadata entry that says which layout a kept file's lines were read in.
_LAYOUT = b"rosterdrop.layout"
# Whether a kept line's row said a status (bulk files count those: validate.RowChecker).
SENT_STATUS = "_sent_status"


@dataclass(frozen=True)
class Layout:
    """What a file's lines mean beyond their bytes: any difference, and it is read in full."""

    context: str  # vouched.context: rosterdrop, the district, its fallback encoding, the spec
    file: str
    header: tuple[str, ...]
    delimiter: str
    encoding: str

    def digest(self) -> bytes:
        return hashlib.sha256(json.dumps(asdict(self)).encode()).hexdigest().encode()

    @property
    def name(self) -> str:
        """The name its kept lines are saved under."""
        return hashlib.sha256(self.file.encode()).hexdigest()[:32] + ".arrow"


class LastRead:
    """The lines the last read of a file kept whose records the roster holds as they are
    (read.KnownLines), sorted by hash; found by the read-ahead thread, taken by the reader."""

    def __init__(self, kept: pa.Table, spill: Spill, read: Callable[[], None]):
        """`kept`: as the last read wrote it, in its line order. The lines the roster still
        holds are taken sorted by hash a column at a time: never the whole file in memory
        beside them (at 5M enrollments that was the read's memory peak, ~0.5 GB over).
        `read`: called once a column is taken, to let go of what was read of `kept` so far
        (its mapped pages)."""
        same = spill.match(_column_frame(kept, [KEYHASH, HASH]))
        read()
        if same is None:
            held = np.zeros(0, dtype=np.int64)
        else:
            held = np.flatnonzero(same.is_not_null().to_numpy())
            order = sorting_order(_column_frame(kept, [LINEHASH])[LINEHASH].to_numpy()[held])
            held = held[order]
        columns, self._nulls = [], []
        for name in kept.column_names:
            column = _column_frame(kept, [name]).to_series()
            if len(column) and column.null_count() == len(column):
                # A key not kept (FileLines.keep): made for each batch taken, not gathered
                # (a string column all null is still 16 bytes a row: ~150 MB at `huge`).
                self._nulls.append(pl.lit(None, column.dtype).alias(name))
            else:
                columns.append(column[held])
            read()
        rows = pl.DataFrame(columns, height=len(held))
        if same is not None:
            rows = rows.with_columns(same[held])
        self._index = HashIndex(rows[LINEHASH].to_numpy())
        self._check = rows[LINECHECK].to_numpy()
        self._rows = rows.drop(LINEHASH, LINECHECK)

    def __len__(self) -> int:
        return self._rows.height

    def find(self, hashes: pl.DataFrame) -> pl.Series:
        at = self._index.find(hashes[LINEHASH].to_numpy())
        hit = at >= 0
        hit[hit] = self._check[at[hit]] == hashes[LINECHECK].to_numpy()[hit]
        return pl.Series(KNOWN, np.where(hit, at, -1)).replace(-1, None)

    def rows(self, known: pl.DataFrame) -> pl.DataFrame:
        """The records of known lines (LINE, LINEHASH, LINECHECK, KNOWN), at their new lines."""
        return self._rows[known[KNOWN].to_numpy()].with_columns(
            *self._nulls,
            known[LINE],
            known[LINEHASH],
            known[LINECHECK],
            pl.lit("active").alias(STATUS),
        )


@dataclass
class FileLines:
    """One file's lines as this read leaves them (to keep), and as the last one kept them.

    What is kept is written to `path` a batch at a time as the file is read, in line order,
    not held: at 5M enrollments that was ~0.5 GB more at the read's memory peak, and a copy
    more to concatenate and sort them at its end (the next read sorts what it takes)."""

    layout: Layout
    entity: str
    path: Path
    last: LastRead | None = None
    _writer: pa.ipc.RecordBatchStreamWriter | None = None
    _schema: pa.Schema | None = None

    def keep(self, mapped: pl.DataFrame, sent_status: pl.Series | None = None) -> None:
        """Keep the records of hashed lines, mapped before any check (`sent_status`: which
        rows said a status; None: none did, or the lines are kept ones, that have the column).
        A line repeated is kept each time: it is found all the same."""
        if LINEHASH not in mapped.columns:
            return
        if sent_status is not None:
            mapped = mapped.with_columns(sent_status.alias(SENT_STATUS))
        elif SENT_STATUS not in mapped.columns:
            mapped = mapped.with_columns(pl.lit(False).alias(SENT_STATUS))
        wanted = pl.col(LINEHASH).is_not_null() & (pl.col(STATUS) == "active")
        refs = [c for c in mapped.columns if not c.startswith("_")]
        key = pl.col(KEY) if self.entity in TARGETS else pl.lit(None, pl.String).alias(KEY)
        kept = mapped.filter(wanted).select(
            LINEHASH,
            LINECHECK,
            key,
            pl.col(refs).cast(pl.Categorical),
            KEYHASH,
            HASH,
            SENT_STATUS,
        )
        if not kept.height:
            return
        table = kept.to_arrow()
        if self._writer is None or self._schema is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema.with_metadata({_LAYOUT: self.layout.digest()})
            self._writer = pa.ipc.new_stream(str(self.path), self._schema)
        # A batch whose columns came out in other types (a column all null) takes the first's.
        self._writer.write_table(table.cast(self._schema))

    def close(self) -> None:
        """The file is read: what it kept is complete (and nothing if nothing was kept)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass
class LineFiles:
    """The files' lines the last applied sync kept (for `token`), and those this import keeps
    (staged in `staged`, published once the sync is committed)."""

    district_id: int
    token: int
    context: str
    staged: Path

    def layout(self, file: str, header: list[str], delimiter: str, encoding: str) -> Layout:
        return Layout(self.context, file, tuple(header), delimiter, encoding)

    def open(self, layout: Layout, entity: str, spill: Spill) -> FileLines:
        """A file's lines: what the last read of the file in this layout kept (`last`; None:
        nothing, or another layout: the file is read in full), and where this read keeps its
        own."""
        lines = FileLines(layout, entity, self.staged / layout.name)
        key = f"{_folder(self.district_id, self.token)}/{layout.name}"
        shared = storage.shared()
        try:
            if shared is None:
                table, read = _mapped(settings.DATA_DIR / key)
            else:
                table = pa.ipc.open_stream(pa.py_buffer(shared.read(key))).read_all()
                read = _read_whole
        except (FileNotFoundError, ValueError, pa.ArrowInvalid):  # ValueError: an empty file
            return lines
        except OSError as error:  # damaged, or storage unreachable: read in full
            log.warning("kept lines %s not read: %s", key, error)
            return lines
        if (table.schema.metadata or {}).get(_LAYOUT) != layout.digest():
            return lines
        last = LastRead(table, spill, read)
        lines.last = last if len(last) else None
        return lines

    def publish(self, token: int) -> None:
        """Name the staged lines for the roster `token` (committed), and drop the others."""
        shared = storage.shared()
        if shared is not None:
            self._share(shared, token)
            return
        folder = settings.DATA_DIR / _folder(self.district_id, token)
        folder.parent.mkdir(parents=True, exist_ok=True)
        old = list(_others(folder.parent))
        for path in old:
            path.replace(path.with_name(f".gone-{path.name}"))
        if self.staged.exists():
            self.staged.replace(folder)
        for path in folder.parent.glob(".gone-*"):
            shutil.rmtree(path, ignore_errors=True)

    def _share(self, shared: storage.S3Bucket, token: int) -> None:
        """Put the staged lines in shared storage under `token`, then delete the others; one
        that fails is said in the log, never the sync's failure (the next read is full)."""
        published = []
        try:
            for path in sorted(self.staged.glob("*")) if self.staged.exists() else ():
                published.append(f"{_folder(self.district_id, token)}/{path.name}")
                shared.put_file(published[-1], path)
            shared.delete_others(f"{FOLDER}/{int(self.district_id)}/", published)
        except Exception as error:
            log.warning("kept lines of district %s not shared: %s", self.district_id, error)


def _mapped(path: Path) -> tuple[pa.Table, Callable[[], None]]:
    """A kept file's lines, read from it as mapped (no copy), and a call that lets go of the
    pages read so far: they count in the process's memory until the mapping goes, and
    touched column after column they were all of the file (447 MB at 5M enrollments, the
    1% change's memory peak at `huge`). Pages let go are read again from the file if needed.
    """
    with path.open("rb") as file:
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    table = pa.ipc.open_stream(pa.py_buffer(mapping)).read_all()
    return table, lambda: mapping.madvise(mmap.MADV_DONTNEED)


def _read_whole() -> None:
    """Nothing to let go of as a kept file is taken: it was read into memory (shared storage)."""


def _column_frame(table: pa.Table, columns: list[str]) -> pl.DataFrame:
    frame = pl.from_arrow(table.select(columns))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _folder(district_id: int, token: int) -> str:
    """Where the lines kept for a roster token are, relative to the data folder and in shared
    storage alike."""
    return f"{FOLDER}/{int(district_id)}/t{int(token)}"


def _others(folder: Path) -> Iterator[Path]:
    return (p for p in folder.iterdir() if p.name.startswith("t") and p.is_dir())
