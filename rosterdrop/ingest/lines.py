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

A found line costs what finding and taking it costs, little more: the kept lines are taken in
their line order and a line's place is mostly guessed from its neighbours' (`LastRead`), and
they are not written again: the last read's kept files stay as they are, linked under the new
token, and only the lines read anew are kept, in a part of their own (`FileLines.linked`).
Kept lines are only ever a cache of what a line maps to, so lines kept there whose records
went meanwhile do no harm; once most of them are such, the found lines are written again.
A file sent again byte for byte (its upload's sha256) whose kept lines are every line of it,
in order (`Whole`), and all held by the roster as they are, is taken whole: not a line read.
A file feeding several entities (users.csv: users, roles, agents) is not vouched for, so its
lines are not kept; the build after a sync keeps its records once checked instead, if the
checks found nothing (`Checked`), and the same bytes sent again, every record held by the
roster as it is, are taken whole too. Where its rows are checked each alone (no unique
column) its lines' hashes are kept with them, those of the rows the checks told about left
out (with their records: such a line is read and told again), and other bytes in the same
layout and mode, or the same with a row told about, are read line by line (`CheckedLines`): a
line found there whose records, all of them, the roster holds as they are is taken as those
records.

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

import functools
import hashlib
import json
import logging
import mmap
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
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
    SAME,
    STATUS,
)
from rosterdrop.ingest.keys import TARGETS
from rosterdrop.ingest.lookup import HashIndex, grouping_order, guessed
from rosterdrop.ingest.spill import Pending, Spill

log = logging.getLogger(__name__)

FOLDER = "lines"
# The Arrow schema metadata entry that says which layout a kept file's lines were read in.
_LAYOUT = b"rosterdrop.layout"
# Whether a kept line's row said a status (bulk files count those: validate.RowChecker).
SENT_STATUS = "_sent_status"
# The last read's kept lines are linked as they are (FileLines.linked) while at least this
# share of them is held by the roster as it is, and they are in fewer than MAX_PARTS parts.
MOST = 0.75
MAX_PARTS = 8
# Kept lines are written in batches of at least this many rows (but the last): each batch
# holds its references' dictionaries, which the next read converts to polars categoricals one
# batch at a time (2M kept enrollments in 22 batches of a piece each: 0.35 s CPU to open, their
# classes' ~55k names each time, against ~0.05 s in two).
KEEP_ROWS = 1 << 20
# How a line is hashed (read.parse_lines), in each layout's digest: kept lines hashed another
# way are never found, so a kept file of another way is not opened (the file is read in full
# and kept anew). 2: a line's bytes with its line end (1: as one polars column, without).
HASHING = 2
# A piece's lines are looked up among the kept lines near where they are expected, a quarter
# of the piece and this many more on each side (`_FoundByHash._near`); if more than one in
# FAR_SHARE of those looked up are not there and some are kept elsewhere, they are looked up
# among every kept line.
NEAR_LINES = 1024
FAR_SHARE = 8
# How many of those are compared with every kept line first, to tell moved lines from new ones.
MOVED_SAMPLE = 8


@dataclass(frozen=True)
class Layout:
    """What a file's lines mean beyond their bytes: any difference, and it is read in full."""

    context: str  # vouched.context: rosterdrop, the district, its fallback encoding, the spec
    file: str
    header: tuple[str, ...]
    delimiter: str
    encoding: str

    def digest(self) -> bytes:
        described = {**asdict(self), "hashing": HASHING}
        return hashlib.sha256(json.dumps(described).encode()).hexdigest().encode()

    @property
    def name(self) -> str:
        """The name its kept lines are saved under (their first part)."""
        return self.part(0)

    @property
    def whole(self) -> str:
        """The name of its kept lines' stamp (`Whole`)."""
        return self.name.removesuffix(".arrow") + ".whole"

    def part(self, number: int) -> str:
        """The name of a part of its kept lines: the lines kept by one read, the later ones
        beside the earlier ones linked as they were (`FileLines.linked`)."""
        stem = hashlib.sha256(self.file.encode()).hexdigest()[:32]
        return f"{stem}.arrow" if number == 0 else f"{stem}-{number}.arrow"

    def output(self, digest: str, number: int) -> str:
        """The name of the checked records a file feeding several entities made for its
        output `number`, read from the bytes whose sha256 is `digest` (`Checked`)."""
        return self.checked(digest).removesuffix(".checked") + f".r{number}.arrow"

    def checked_lines(self, digest: str) -> str:
        """The name of the lines of the file whose checked records (`Checked`) are kept under
        `digest`: each line's hashes, to find it again in other bytes (`CheckedLines`)."""
        return self.checked(digest).removesuffix(".checked") + ".lines.arrow"

    def checked(self, digest: str) -> str:
        """The name of the stamp of a file's checked records (`Checked`): one for each file
        sent (`digest`) in this layout, so that a build after a sync that left the roster as
        it was never replaces the records a read may be taking."""
        sent = hashlib.sha256(self.digest() + digest.encode()).hexdigest()[:24]
        return self.name.removesuffix(".arrow") + f".{sent}.checked"


@dataclass(frozen=True)
class Whole:
    """A kept file's stamp: its `parts`, taken one after the other, hold every line of the file
    whose sha256 is `digest`, row i its line i + 2, as a read of those bytes in that layout
    finds them (`lines` rows, no issue). A read of a file with that digest whose kept lines
    the roster all holds as they are takes them whole, reading nothing but its header
    (`FileLines.whole`): the lines decoded, cut and hashed were most of what a found line cost
    (`large`: ~1.3 s CPU of enrollments' 2.9)."""

    digest: str
    lines: int
    parts: int

    @classmethod
    def read(cls, path: Path) -> "Whole | None":
        try:
            found = json.loads(path.read_bytes())
            return cls(str(found["digest"]), int(found["lines"]), int(found["parts"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))


@dataclass(frozen=True)
class Checked:
    """The stamp of a file feeding several entities (users.csv: users, their roles, their
    agents) kept as its checked records: for each output, its records (`outputs`: how many,
    `Layout.output`) as a full read of the file whose sha256 is `digest`, in that layout and
    `mode`, keeps them once its rows are checked, in line order; of its `rows` rows,
    `with_status` said a status (a bulk file counts them: validate.RowChecker), and `told`
    were told about by those checks (a finding, a row skipped, or not active: their records
    are not kept, nor their lines, `CheckedLines`).

    Such a file is not vouched for record by record (ingest/vouched.py): a row's values reach
    several records, and a value checked as a whole (a user's list of schools, required)
    reaches them in pieces, or none at all. But a row's checks depend on nothing but its
    values and the layout (rosterdrop, the district's settings and format spec, the file's
    name, header, delimiter and encoding), and a file's checks across its own rows (unique
    values, row rules) on its bytes: the same bytes in the same layout and mode are checked
    the same. A file sent again byte for byte, none of its rows told about, whose records the
    roster all holds as they are is taken whole (`LineFiles.checked`): what a full read would
    check, map and keep, none spilled. Kept by the build after a sync
    (`LineFiles.checked_anew`), never on a read's path.
    """

    digest: str
    mode: str
    rows: int
    with_status: int
    outputs: tuple[int, ...]
    told: int = 0

    @classmethod
    def read(cls, path: Path) -> "Checked | None":
        try:
            found = json.loads(path.read_bytes())
            outputs = tuple(int(n) for n in found["outputs"])
            return cls(
                str(found["digest"]),
                str(found["mode"]),
                int(found["rows"]),
                int(found["with_status"]),
                outputs,
                int(found.get("told", 0)),  # a stamp kept before: only with none told
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)))


@dataclass
class CheckedRecords:
    """A file's checked records as the build after a sync keeps them (`Checked`): each
    output's written to its own file, KEEP_ROWS records at a time, as the file is read."""

    layout: Layout
    entities: tuple[str, ...]
    folder: Path
    digest: str
    mode: str
    # Its lines' hashes kept too (`CheckedLines`): a file whose rows are checked each alone.
    by_line: bool = False
    with_status: int = 0
    told: int = 0
    _writers: list["_Records"] = field(default_factory=list)
    _lines: "_KeptStream | None" = None

    def __post_init__(self) -> None:
        self._writers = [
            _Records(_KeptStream(self.folder / self.layout.output(self.digest, i), self.layout), e)
            for i, e in enumerate(self.entities)
        ]
        if self.by_line:
            path = self.folder / self.layout.checked_lines(self.digest)
            self._lines = _KeptStream(path, self.layout)

    def keep(
        self,
        mapped: Sequence[pl.DataFrame],
        with_status: int,
        lines: pl.DataFrame | None,
        told: int = 0,
    ) -> None:
        """A checked batch's records, one frame per output (mapping.map_batch), how many
        of its rows said a status, its lines' hashes (LINE, LINEHASH, LINECHECK,
        SENT_STATUS; None: not hashed, a piece the csv module read), and how many of its rows
        were told about (their records and lines left out)."""
        self.with_status += with_status
        self.told += told
        for writer, frame in zip(self._writers, mapped, strict=True):
            writer.keep(frame)
        if self._lines is not None and lines is not None:
            self._lines.add(lines)

    def close(self, rows: int, encoding: str, issues: Sequence[object]) -> None:
        """Every row read and checked: the records are stamped, if the file was read in the
        encoding its first chunk said, without an issue of its own."""
        counts = tuple(writer.stream.close() for writer in self._writers)
        if self._lines is not None:
            self._lines.close()
        if issues or encoding != self.layout.encoding or not rows:
            self.discard()
            return
        Checked(self.digest, self.mode, rows, self.with_status, counts, self.told).write(
            self.folder / self.layout.checked(self.digest)
        )

    def discard(self) -> None:
        """A row told about where rows are not checked each alone (or the file not read to
        its end): nothing of it is kept; the next read is a full one."""
        for writer in self._writers:
            writer.stream.discard()
        if self._lines is not None:
            self._lines.discard()


@dataclass
class _KeptStream:
    """Frames kept for the next read, as one Arrow stream file marked with their layout,
    written KEEP_ROWS rows or more at a time (a file's kept lines, an output's checked
    records)."""

    path: Path
    layout: Layout
    written: int = 0
    _pending: Pending = field(default_factory=lambda: Pending(KEEP_ROWS))
    _writer: pa.ipc.RecordBatchStreamWriter | None = None
    _schema: pa.Schema | None = None

    def add(self, frame: pl.DataFrame) -> None:
        if self._pending.add(frame):
            self._write()

    def _write(self) -> None:
        frame = self._pending.take(rechunk=True)
        if frame is None:
            return
        table = frame.to_arrow()
        if self._writer is None or self._schema is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema.with_metadata({_LAYOUT: self.layout.digest()})
            self._writer = pa.ipc.new_stream(str(self.path), self._schema)
        # A batch whose columns came out in other types (a column all null) takes the first's.
        self._writer.write_table(table.cast(self._schema))
        self.written += table.num_rows

    def close(self) -> int:
        """Written to its end: how many rows."""
        self._write()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.written

    def discard(self) -> None:
        """Nothing of it is kept."""
        self._pending.clear()
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass
class _Records:
    """One output's checked records."""

    stream: _KeptStream
    entity: str

    def keep(self, mapped: pl.DataFrame) -> None:
        refs = [c for c in mapped.columns if not c.startswith("_")]
        key = pl.col(KEY) if self.entity in TARGETS else pl.lit(None, pl.String).alias(KEY)
        self.stream.add(mapped.select(key, LINE, pl.col(refs).cast(pl.Categorical), HASH, KEYHASH))


def _held_records(table: pa.Table, spill: Spill, read: Callable[[], None]) -> pl.DataFrame | None:
    """An output's checked records (`Checked`), every one of them held by the roster as it is,
    with its place there (SAME), as a full read keeps them; None if one is not."""
    same = spill.match(_column_frame(table, [KEYHASH, HASH]), in_order=True)
    read()
    if same is None:
        if table.num_rows:
            return None
        same = pl.Series(SAME, [], dtype=pl.UInt32)
    elif same.null_count():
        return None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    read()
    return frame.with_columns(same, pl.lit("active").alias(STATUS))


class _FoundByHash:
    """Kept lines found by their two hashes (`_hashes`, `_checks`: one each per line), in
    their line order: a piece's lines are looked up first among the kept lines near where the
    last piece's ended (`_near`), and through an index of every kept line's hashes only when
    many of them are not there (a file in another order)."""

    _hashes: np.ndarray
    _checks: np.ndarray
    # Where, among the kept lines, the line after the last one found is: the next piece's
    # lines are looked for around it.
    _next: int = 0
    # Whether a piece's lines not found near were sampled among every kept line (`_moved`).
    _sampled: bool = False

    @functools.cached_property
    def _index(self) -> HashIndex:
        """Every held line's hashes, to find a line by: built only when a piece's lines are
        mostly not near where they were expected (5M lines: 0.4-0.5 s CPU grouped)."""
        return HashIndex(self._hashes, grouping_order(self._hashes))

    def _near(self, lines: int) -> tuple[int, HashIndex]:
        """An index of the kept lines around where a piece of `lines` lines is expected:
        where the first of them is, and the index. Built per piece, over a stretch a quarter
        longer on each side: the whole file's index costs ~0.4 s CPU at 5M lines, sorted
        across memory, and a nightly file's lines are mostly where they were."""
        margin = lines // 4 + NEAR_LINES
        start = max(self._next - margin, 0)
        stretch = self._hashes[start : self._next + lines + margin]
        return start, HashIndex(stretch, grouping_order(stretch))

    def find(self, hashes: pl.DataFrame) -> pl.Series:
        """Where lines (their two hashes) are among the rows: a file is mostly the lines its
        last read kept, in their order, so most places are guessed from their neighbours'
        (lookup.guessed), taken where both hashes agree; the others looked up among the kept
        lines near them. If more than a few of those are not there, they are looked up among
        every kept line. A line not found is read anew: kept lines are only a cache."""
        line, check = hashes[LINEHASH].to_numpy(), hashes[LINECHECK].to_numpy()
        start, near = self._near(len(line))
        missed: list[np.ndarray] = []

        def look_up(at: np.ndarray) -> np.ndarray:
            found = near.find(line[at])
            hit = np.flatnonzero(found >= 0)
            found[hit] += start
            missed.append(at[found < 0])
            return self._checked(found, check[at])

        def agree(at: np.ndarray, guess: np.ndarray) -> np.ndarray:
            right: np.ndarray = self._hashes[guess] == line[at]
            right &= self._checks[guess] == check[at]
            return right

        found = guessed(len(line), len(self._hashes), look_up, agree)
        elsewhere = np.concatenate([np.zeros(0, dtype=np.int64), *missed])
        if len(elsewhere) > len(line) // FAR_SHARE and self._moved(line[elsewhere]):
            far = self._index.find(line[elsewhere])
            found[elsewhere] = self._checked(far, check[elsewhere])
        hit = np.flatnonzero(found >= 0)
        if len(hit):
            self._next = int(found[hit[-1]]) + 1
        return pl.Series(KNOWN, found).replace(-1, None)

    def _moved(self, lines: np.ndarray) -> bool:
        """Whether lines not found near where they were expected are kept elsewhere (a file
        in another order), judged by MOVED_SAMPLE of them compared with every kept line: else
        they are new (appended at the file's end, say), and the index of every kept line
        would be built for nothing. Judged so once per file (each sample costs a pass over
        every kept line): a second piece with as many such lines builds the index, as does a
        sample kept elsewhere, and once built it is asked."""
        if "_index" in self.__dict__ or self._sampled:
            return True
        self._sampled = True
        sample = lines[np.linspace(0, len(lines) - 1, MOVED_SAMPLE).astype(np.int64)]
        return any(bool(np.any(self._hashes == h)) for h in sample)

    def _checked(self, found: np.ndarray, check: np.ndarray) -> np.ndarray:
        """Places found by the first hash (-1: none) kept where the second hash agrees."""
        hit = np.flatnonzero(found >= 0)
        found[hit[self._checks[found[hit]] != check[hit]]] = -1
        return found


class LastRead(_FoundByHash):
    """The lines the last read of a file kept whose records the roster holds as they are
    (read.KnownLines), in their line order, found by the read-ahead thread by their hashes
    (`_FoundByHash`), taken by the reader."""

    def __init__(self, kept: pa.Table, spill: Spill, read: Callable[[], None]):
        """`kept`: as the last read wrote it, in its line order. The lines the roster still
        holds are taken in that order a column at a time: never the whole file in memory
        beside them (at 5M enrollments that was the read's memory peak, ~0.5 GB over), and,
        a file being mostly the lines it had, the lines found in a batch are taken from one
        stretch of memory, not gathered at random across it (sorted by hash, taking the 5M
        enrollments' lines cost about eight times the CPU). Every line held, the columns are
        taken as they are, not gathered. `read`: called once a column is taken, to let go of
        what was read of `kept` so far (its mapped pages)."""
        self.kept = kept.num_rows
        same = spill.match(_column_frame(kept, [KEYHASH, HASH]), in_order=True)
        read()
        if same is None:
            held = np.zeros(0, dtype=np.int64)
        else:
            held = np.flatnonzero(same.is_not_null().to_numpy())
        every = len(held) == self.kept
        columns, self._nulls = [], []
        for name in kept.column_names:
            if self.kept and kept.column(name).null_count == self.kept:
                # A key not kept (FileLines.keep): made for each batch taken, not gathered
                # (a string column all null is still 16 bytes a row: ~150 MB at `huge`), nor
                # made a polars column first (5M: 0.07 s CPU).
                dtype = _column_frame(kept.slice(0, 0), [name]).to_series().dtype
                self._nulls.append(pl.lit(None, dtype).alias(name))
                continue
            column = _column_frame(kept, [name]).to_series()
            columns.append(column if every else column.gather(held))
            read()
        rows = pl.DataFrame(columns, height=len(held))
        if same is not None:
            rows = rows.with_columns(same if every else same.gather(held))
        self._hashes = rows[LINEHASH].to_numpy()
        self._checks = rows[LINECHECK].to_numpy()
        self._rows = rows.drop(LINEHASH, LINECHECK)

    def __len__(self) -> int:
        return self._rows.height

    def everything(self) -> pl.DataFrame:
        """Every held line's record at its place, row i at line i + 2 (a file taken whole):
        the held rows as they are, no line found nor gathered."""
        return self._rows.with_columns(
            *self._nulls,
            pl.int_range(2, len(self) + 2, dtype=pl.UInt32, eager=True).alias(LINE),
            pl.lit("active").alias(STATUS),
        )

    def rows(self, known: pl.DataFrame) -> pl.DataFrame:
        """The records of known lines (LINE, LINEHASH, LINECHECK, KNOWN), at their new lines."""
        return self._rows[known[KNOWN].to_numpy()].with_columns(
            *self._nulls,
            known[LINE],
            known[LINEHASH],
            known[LINECHECK],
            pl.lit("active").alias(STATUS),
        )


class CheckedLines(_FoundByHash):
    """A file feeding several entities read line by line (read.KnownLines): the lines of
    its last checked records (`Checked`, kept with their hashes) whose records, every one of
    every output (a user, each of its roles, its agents), the roster holds as they are.

    A row's checks depend on nothing but its values and the layout, where the file has no
    checks across its rows (no unique column; `reader._by_line`): a line found again, in the
    same layout and mode, checks and maps as it did, to records the roster holds as they are.
    Its records are taken as they were kept, a line's in their kept order (its roles in its
    list's), at its new line; a line of which one record is not held is read anew."""

    def __init__(
        self,
        lines: pa.Table,
        outputs: Sequence[pa.Table],
        spills: Sequence[Spill],
        read: Callable[[], None],
    ):
        """`lines`: LINE, LINEHASH, LINECHECK and SENT_STATUS of the kept lines, in line
        order; `outputs`: each output's records in line order (LINE: the line they came
        from), matched with the roster through its `spills`."""
        kept = _column_frame(lines, [LINE, LINEHASH, LINECHECK, SENT_STATUS])
        numbers = kept[LINE].to_numpy()
        held = np.ones(len(numbers), dtype=bool)
        self._outputs: list[pl.DataFrame] = []
        for table, spill in zip(outputs, spills, strict=True):
            records = pl.from_arrow(table)
            assert isinstance(records, pl.DataFrame)
            same = spill.match(records.select(KEYHASH, HASH), in_order=True)
            read()
            if same is None:
                same = pl.repeat(None, records.height, dtype=pl.UInt32, eager=True)
            at = records[LINE].to_numpy()
            held &= ~np.isin(numbers, at[same.is_null().to_numpy()])
            self._outputs.append(records.with_columns(same.alias(SAME)))
        kept = kept.filter(held)
        numbers = numbers[held]
        self._spans = [
            (np.searchsorted(at, numbers, "left"), np.searchsorted(at, numbers, "right"))
            for at in (records[LINE].to_numpy() for records in self._outputs)
        ]
        self._hashes = kept[LINEHASH].to_numpy()
        self._checks = kept[LINECHECK].to_numpy()
        self._status = kept[SENT_STATUS].to_numpy()

    def __len__(self) -> int:
        return len(self._hashes)

    def with_status(self, known: pl.DataFrame) -> int:
        """How many of the known lines said a status (a bulk file counts them)."""
        return int(self._status[known[KNOWN].to_numpy()].sum())

    def rows(self, known: pl.DataFrame) -> list[pl.DataFrame]:
        """Each output's records of known lines (LINE, KNOWN), at their new lines: a line's
        records one after the other, in the order they were kept."""
        at, lines = known[KNOWN].to_numpy(), known[LINE].to_numpy()
        taken = []
        for records, (starts, stops) in zip(self._outputs, self._spans, strict=True):
            first, counts = starts[at], stops[at] - starts[at]
            before = np.cumsum(counts) - counts
            rows = np.repeat(first - before, counts) + np.arange(int(counts.sum()))
            taken.append(
                records[rows].with_columns(
                    pl.Series(LINE, np.repeat(lines, counts), dtype=pl.UInt32),
                    pl.lit("active").alias(STATUS),
                )
            )
        return taken


@dataclass
class FileLines:
    """One file's lines as this read leaves them (to keep), and as the last one kept them.

    What is kept is written to `path` as the file is read, KEEP_ROWS lines at a time, in line
    order, not held whole: at 5M enrollments that was ~0.5 GB more at the read's memory peak,
    and a copy more to concatenate and sort them at its end.

    `linked`: the last read's kept files stay as they are (hard links in the staged folder),
    and only the lines read anew are written, as one more part: a found line is not written
    again (5M enrollments: ~1.5 s CPU to convert and write them, a 450 MB file). Lines kept
    there whose records went meanwhile stay with them, harmless (a line is taken only if the
    roster holds its record as it is), until a read finds under MOST of its kept lines held,
    or they are in MAX_PARTS parts: that read writes its found lines again, in one part."""

    layout: Layout
    entity: str
    path: Path
    last: LastRead | None = None
    linked: bool = False
    # The sha256 of the file read (None: not known, a zip's member), and the stamp of the
    # last read's kept lines (Whole; None: none, or not for the parts linked).
    digest: str | None = None
    stamp: Whole | None = None
    _stream: _KeptStream = field(init=False)
    # The line the next row written must be on for what is written to be every line in order
    # (None: it is not), and whether the file was taken whole.
    _next_line: int | None = 2
    _taken_whole: bool = False

    def __post_init__(self) -> None:
        self._stream = _KeptStream(self.path, self.layout)

    def write_to(self, path: Path) -> None:
        """Keep its lines in `path` instead (before any is kept)."""
        self.path, self._stream = path, _KeptStream(path, self.layout)

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
        if self._next_line is not None:
            at = mapped.filter(wanted)[LINE].to_numpy()
            if len(at) and (at[0] != self._next_line or np.any(np.diff(at) != 1)):
                self._next_line = None
            else:
                self._next_line += len(at)
        if not kept.height:
            return
        self._stream.add(kept)

    def keep_found(self, known: pl.DataFrame) -> None:
        """Keep found lines (LastRead.rows) for the next read, unless their kept files are
        linked as they were."""
        if not self.linked:
            self.keep(known)

    def whole(self) -> pl.DataFrame | None:
        """The file's records, every line found (`LastRead.everything`), if it is taken whole
        (`Whole`): its digest is the stamp's, the roster holds every kept line as it is, and
        the parts are linked as they are. None: it is read."""
        last, stamp = self.last, self.stamp
        if last is None or stamp is None or not self.linked or self.digest != stamp.digest:
            return None
        if not stamp.lines == last.kept == len(last):
            return None
        self._taken_whole = True
        return last.everything()

    def close(self, rows: int = 0, encoding: str = "", issues: Sequence[object] = ()) -> None:
        """The file is read: what it kept is complete (and nothing if nothing was kept).
        `rows`: the rows it had, `encoding` the one it was read in to its end, `issues` the
        reading's own. Its kept lines are stamped (`Whole`) if they are every line of it, in
        order (written by this read in one part, or the last read's, linked, and the file
        taken whole), read without an issue in the encoding its first chunk said (what a file
        taken whole is told: it decodes that chunk only)."""
        self._stream.close()
        if issues or encoding != self.layout.encoding or self.digest is None or not rows:
            return
        stamp = None
        if self._taken_whole and self.stamp is not None:
            stamp = self.stamp
        elif not self.linked and self._next_line == rows + 2 and self.path.exists():
            stamp = Whole(self.digest, rows, 1)
        if stamp is not None:
            stamp.write(self.path.parent / self.layout.whole)

    def discard(self) -> None:
        """The file could not be read to its end: nothing of it is kept."""
        self._stream.discard()


@dataclass
class LineFiles:
    """The files' lines the last applied sync kept (for `token`), and those this import keeps
    (staged in `staged`, published once the sync is committed)."""

    district_id: int
    token: int
    context: str
    staged: Path
    # The sha256 of each file sent as it is (not in a zip), by its name as sent.
    digests: dict[str, str] = field(default_factory=dict)

    def layout(self, file: str, header: list[str], delimiter: str, encoding: str) -> Layout:
        return Layout(self.context, file, tuple(header), delimiter, encoding)

    def anew(self, layout: Layout, entity: str, digest: str | None) -> FileLines | None:
        """Where a build after the sync keeps a file's lines (ingest/line_builds.py), if the
        roster keeps none of that file yet (None: it does)."""
        if _parts(settings.DATA_DIR / _folder(self.district_id, self.token), layout):
            return None
        return FileLines(layout, entity, self.staged / layout.name, digest=digest)

    def checked_anew(
        self,
        layout: Layout,
        entities: Sequence[str],
        digest: str | None,
        mode: str,
        by_line: bool = False,
    ) -> CheckedRecords | None:
        """Where a build after the sync keeps the checked records of a file feeding several
        entities (`Checked`; `by_line`: with its lines' hashes), if its digest is known and
        the roster keeps none of it yet."""
        folder = settings.DATA_DIR / _folder(self.district_id, self.token)
        if digest is None or (folder / layout.checked(digest)).exists():
            return None
        return CheckedRecords(layout, tuple(entities), self.staged, digest, mode, by_line)

    def checked(
        self, layout: Layout, spills: Sequence[Spill], digest: str | None, mode: str
    ) -> tuple[Checked, list[pl.DataFrame]] | None:
        """A file feeding several entities (one `spills` each, in its outputs' order) taken
        whole as its checked records (`Checked`): sent again byte for byte (`digest`) in the
        same layout and mode, none of its rows told about by the build's checks, and every
        record of every output held by the roster as it is. Its kept files are linked into
        this read's staged folder, as they are, for the next read. None: it is read in full
        (line by line, `checked_lines`, where it can be). Not with shared storage."""
        if digest is None or storage.shared() is not None:
            return None
        folder = settings.DATA_DIR / _folder(self.district_id, self.token)
        stamp = Checked.read(folder / layout.checked(digest))
        if stamp is None or (stamp.digest, stamp.mode) != (digest, mode) or stamp.told:
            return None
        if len(stamp.outputs) != len(spills):
            return None
        paths = [folder / layout.output(digest, i) for i in range(len(spills))]
        frames = []
        for path, spill, count in zip(paths, spills, stamp.outputs, strict=True):
            opened = _opened(path, layout, count)
            if opened is None:
                return None
            frame = _held_records(opened[0], spill, opened[1])
            if frame is None:
                return None
            frames.append(frame)
        lines = folder / layout.checked_lines(digest)  # if kept: for a read line by line
        kept = [*paths, *([lines] if lines.exists() else []), folder / layout.checked(digest)]
        if not _linked(kept, self.staged):
            return None
        return stamp, frames

    def checked_lines(
        self, layout: Layout, spills: Sequence[Spill], mode: str
    ) -> CheckedLines | None:
        """A file feeding several entities, not sent again as it was, read line by line: the
        lines of its newest checked records kept in this layout and mode, with their hashes
        (`CheckedLines`). Those kept files are linked into this read's staged folder, as
        they are, for the next read (the build after the sync keeps its own beside them,
        newer). None: nothing kept (it is read in full). Not with shared storage."""
        if storage.shared() is not None:
            return None
        folder = settings.DATA_DIR / _folder(self.district_id, self.token)
        stem = layout.name.removesuffix(".arrow")
        stamps = sorted(folder.glob(f"{stem}.*.checked"), key=_modified, reverse=True)
        stamp = Checked.read(stamps[0]) if stamps else None
        if stamp is None or stamp.mode != mode or len(stamp.outputs) != len(spills):
            return None
        if stamps[0].name != layout.checked(stamp.digest):  # another layout's
            return None
        lines = folder / layout.checked_lines(stamp.digest)
        paths = [folder / layout.output(stamp.digest, i) for i in range(len(spills))]
        tables, reads = [], []
        for path, count in [(lines, None), *zip(paths, stamp.outputs, strict=True)]:
            opened = _opened(path, layout, count)
            if opened is None:
                return None
            tables.append(opened[0])
            reads.append(opened[1])

        def read() -> None:
            for each in reads:
                each()

        known = CheckedLines(tables[0], tables[1:], spills, read)
        if not len(known) or not _linked([lines, *paths, stamps[0]], self.staged):
            return None
        return known

    def open(self, layout: Layout, entity: str, spill: Spill, digest: str | None) -> FileLines:
        """A file's lines: what the last read of the file in this layout kept (`last`; None:
        nothing, or another layout: the file is read in full), and where this read keeps its
        own. `digest`: the file's sha256, if known."""
        lines = FileLines(layout, entity, self.staged / layout.name, digest=digest)
        folder = _folder(self.district_id, self.token)
        shared = storage.shared()
        try:
            if shared is None:
                parts = _parts(settings.DATA_DIR / folder, layout)
                table, read = _mapped(parts)
            else:
                parts = []
                key = f"{folder}/{layout.name}"
                table = pa.ipc.open_stream(pa.py_buffer(shared.read(key))).read_all()
                read = _read_whole
        except (FileNotFoundError, ValueError, pa.ArrowInvalid):  # ValueError: an empty file
            return lines
        except OSError as error:  # damaged, or storage unreachable: read in full
            log.warning("kept lines %s/%s not read: %s", folder, layout.name, error)
            return lines
        if table is None or (table.schema.metadata or {}).get(_LAYOUT) != layout.digest():
            return lines
        last = LastRead(table, spill, read)
        lines.last = last if len(last) else None
        held = len(last) >= MOST * table.num_rows
        if held and 0 < len(parts) < MAX_PARTS and _linked(parts, self.staged):
            lines.linked = True
            lines.write_to(self.staged / layout.part(len(parts)))
            stamp = Whole.read(parts[0].parent / layout.whole)
            if stamp is not None and stamp.parts == len(parts):
                lines.stamp = stamp
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

    def add(self) -> None:
        """Put the staged lines beside those kept for the roster `token` (a build after its
        sync, `anew`), one file at a time (an import reading them finds each whole or not at
        all). Not if the roster has moved on since: the folder is gone, or goes with the next
        sync (`publish` drops the others)."""
        folder = settings.DATA_DIR / _folder(self.district_id, self.token)
        # A file's parts before its stamp (Whole, Checked): a stamp says what parts hold.
        staged = sorted(self.staged.iterdir()) if self.staged.exists() else []
        for path in sorted(staged, key=lambda p: (p.suffix in (".whole", ".checked"), p.name)):
            folder.mkdir(parents=True, exist_ok=True)
            path.replace(folder / path.name)

    def _share(self, shared: storage.S3Bucket, token: int) -> None:
        """Put the staged lines in shared storage under `token`, then delete the others; one
        that fails is said in the log, never the sync's failure (the next read is full)."""
        published = []
        try:
            # Stamps (Whole) stay here: a file is taken whole only from the data folder.
            for path in sorted(self.staged.glob("*.arrow")) if self.staged.exists() else ():
                published.append(f"{_folder(self.district_id, token)}/{path.name}")
                shared.put_file(published[-1], path)
            shared.delete_others(f"{FOLDER}/{int(self.district_id)}/", published)
        except Exception as error:
            log.warning("kept lines of district %s not shared: %s", self.district_id, error)


def _mapped(parts: list[Path]) -> tuple[pa.Table | None, Callable[[], None]]:
    """A kept file's lines, read from its parts as mapped (no copy), and a call that lets go
    of the pages read so far: they count in the process's memory until the mapping goes, and
    touched column after column they were all of the file (447 MB at 5M enrollments, the
    1% change's memory peak at `huge`). Pages let go are read again from the file if needed.
    None: its parts were kept in another layout (or types), to be read in full.
    """
    if not parts:
        raise FileNotFoundError("no kept lines")
    mappings, tables = [], []
    for path in parts:
        with path.open("rb") as file:
            mappings.append(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
        tables.append(pa.ipc.open_stream(pa.py_buffer(mappings[-1])).read_all())
    schema = tables[0].schema
    if any(t.schema != schema or t.schema.metadata != schema.metadata for t in tables):
        return None, _read_whole
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def read() -> None:
        for mapping in mappings:
            mapping.madvise(mmap.MADV_DONTNEED)

    return table, read


def _opened(
    path: Path, layout: Layout, count: int | None
) -> tuple[pa.Table, Callable[[], None]] | None:
    """A kept file of checked records or lines (`Checked`), mapped: None if it is missing,
    damaged, of another layout, or (`count`) not of that many rows."""
    try:
        table, read = _mapped([path])
    except FileNotFoundError:
        return None
    except (ValueError, OSError, pa.ArrowInvalid) as error:  # damaged: read in full
        log.warning("checked records %s not read: %s", path, error)
        return None
    if table is None or (table.schema.metadata or {}).get(_LAYOUT) != layout.digest():
        return None
    if count is not None and table.num_rows != count:
        return None
    return table, read


def _modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _parts(folder: Path, layout: Layout) -> list[Path]:
    """The parts a file's lines were kept in, in order (none: nothing kept)."""
    parts: list[Path] = []
    while (folder / layout.part(len(parts))).exists():
        parts.append(folder / layout.part(len(parts)))
    return parts


def _linked(parts: list[Path], staged: Path) -> bool:
    """The last read's kept parts linked into this read's staged folder, as they are."""
    try:
        staged.mkdir(parents=True, exist_ok=True)
        for path in parts:
            (staged / path.name).hardlink_to(path)
    except OSError as error:  # another file system: written again instead
        log.warning("kept lines %s not linked: %s", parts[0], error)
        for path in parts:
            (staged / path.name).unlink(missing_ok=True)
        return False
    return True


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
