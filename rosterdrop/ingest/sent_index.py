"""SIS search from an index built at import, never by reading a whole raw file per request.

Searching the rows of a file as sent read the whole file on each request: 2.4 s for users.csv
at 500k students, 10 s for enrollments.csv at 5M enrollments. When a sync is imported, each
of its files the format knows is read once more from the local copy the import already
fetched (by polars where a stretch of it has no quotes, else the csv module), and its rows
are kept in blocks of BLOCK: each row's physical line and byte offset, and its ID and name
cells casefolded. A file that names no one, such as enrollments.csv, is searched by the IDs
it refers to and its own: those it refers to (a user's, a class's, a school's) are kept once
each, with the rows each is in (731k distinct values for 15M cells at 5M enrollments), and
found in any part, as the page found text in every cell (case-insensitive); a row's own ID
(an enrollment's) is kept in byte order and found whole or from its start, by a B-tree: 5M
unique IDs (185 MB) scanned per request cost 0.3-0.5 s, and no index of their parts is much
smaller than they are. The page reads only the rows it shows, by offset (ranged reads on S3).

An index is keyed by the bytes it was built from (the upload's sha256, and the file's name
in it), so that a re-sent upload finds it again; retention deletes it with the last upload
of those bytes (`forget`, on inbox.signals.upload_purged).
"""

import bisect
import csv
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
from django.db import transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import StrIndex

from rosterdrop import polars_csv
from rosterdrop.districts.models import District
from rosterdrop.formats.spec import FileSpec, FormatSpec
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.models import SentBlock, SentFile, SentKeys, SentValues
from rosterdrop.ingest.unpack import Limits, unpack
from rosterdrop.roster.schema import NAME_FIELDS, REFS
from rosterdrop.timing import timed

log = logging.getLogger(__name__)

BLOCK = 1024
SAVED = 64  # blocks written at a time
VALUES = 1024  # distinct values a SentValues holds
NUMBERED = 1 << 19  # rows whose referred values are numbered at a time
KEYS = 1024  # own IDs a SentKeys holds
KEYED = 64  # bytes of a SentKeys' first value in its indexed column (searched with the same)
CHUNK = 4 << 20
# The canonical fields searched besides the key: names, and the ID a district gives people.
SEARCHED = NAME_FIELDS | {"identifier"}
CELL, ROW = "\x1f", "\n"
Span = tuple[int, int]  # bytes from, to (excluded)


@dataclass(frozen=True)
class Columns:
    """The spec's column names an index keeps, by how a search finds them."""

    by_row: set[str]  # with each row, found in any part: a file naming people or things
    by_value: set[str]  # the single IDs a file that names no one refers to, in any part
    by_key: set[str]  # its rows' own IDs (an enrollment's sourcedId), whole or from the start


def columns(spec: FileSpec) -> Columns:
    """A file that names someone or something is searched in its keys and name columns, row
    by row; one that names no one (enrollments, demographics) in the single IDs it refers to
    (a user, a class, a school; demographics' sourcedId is a user's), kept as distinct
    values, and in its rows' own IDs (an enrollment's), kept in byte order."""
    names = {
        source
        for output in spec.outputs
        for field, source in output.fields.items()
        if field in SEARCHED and isinstance(source, str)
    }
    keys = {key for output in spec.outputs for key in output.key}
    if names & {c.name for c in spec.columns}:
        return Columns(by_row=names | keys, by_value=set(), by_key=set())
    if not spec.outputs:  # read and checked, never kept (SDS's userFlags.csv): not indexed
        return Columns(by_row=set(), by_value=set(), by_key=set())
    refs = {ref.field for ref in REFS.get(spec.outputs[0].entity, ()) if not ref.many}
    referred = {
        source
        for output in spec.outputs
        for field, source in output.fields.items()
        if field in refs and isinstance(source, str)
    }
    if "sourcedId" in refs:  # a key that is a reference: demographics' names a user
        referred |= {output.key[0] for output in spec.outputs if len(output.key) == 1}
    return Columns(by_row=set(), by_value=referred, by_key=keys - referred)


def _positions(header: list[str], spec: FileSpec, wanted: set[str]) -> list[int]:
    return [
        i
        for i, name in enumerate(header)
        if (column := spec.column(name.lstrip("\ufeff"))) and column.name in wanted
    ]


def searched_in(header: list[str], spec: FileSpec) -> tuple[list[int], list[int]]:
    """The positions in a file's header of the columns a search finds text in, and of those
    it finds whole or from their start (a row's own ID in a file that names no one)."""
    kept = columns(spec)
    return (
        _positions(header, spec, kept.by_row | kept.by_value),
        _positions(header, spec, kept.by_key),
    )


def _fold(cell: str) -> str:
    """A cell as searched: casefolded, without NUL (PostgreSQL text refuses it: the import
    cleaned the cell, not this copy). It holds no line break: the csv module is handed lines
    without theirs."""
    return cell.casefold().replace("\x00", "")


def text(raw: bytes, fallback: str) -> str:
    """A row's bytes as text: UTF-8, or the district's fallback encoding where it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode(fallback or "cp1252", "replace")


@dataclass
class _Built:
    header_end: int
    rows: int
    row_terms: bool  # whether its blocks keep each row's searched cells


Record = SentBlock | SentValues | SentKeys
Save = Callable[[list[Record]], None]


class _Values:
    """The distinct values of a file's reference columns (casefolded, numbered as first
    seen), and the numbers of those each row holds, one column of them per reference column
    (60 MB at 5M enrollments, against 560 MB of their text). Rows are numbered NUMBERED at a
    time, by polars joins: a Python call per cell cost more than the rest of the build."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}  # by casefolded value
        self.known = pl.DataFrame(schema={"cell": pl.String, "number": pl.UInt32})  # as sent
        self.pending: list[list[pl.Series]] = []
        self.held: list[np.ndarray] = []

    def add(self, columns: list[pl.Series]) -> None:
        """The cells of the next rows, a Series per column."""
        self.pending.append(columns)
        if sum(len(c[0]) for c in self.pending) >= NUMBERED:
            self._number()

    def _number(self) -> None:
        columns = [pl.concat(column) for column in zip(*self.pending, strict=True)]
        self.pending = []
        cells = pl.concat(columns).unique().alias("cell").to_frame()
        new = cells.join(self.known, on="cell", how="anti")["cell"].to_list()
        folded = _fold(ROW.join(new)).split(ROW) if new else []  # at once: cheaper a call
        numbers = [self.numbers.setdefault(cell, len(self.numbers)) for cell in folded]
        added = pl.DataFrame({"cell": new, "number": numbers}, schema=self.known.schema)
        self.known = pl.concat([self.known, added])
        self.held.append(
            np.column_stack(
                [
                    column.replace_strict(self.known["cell"], self.known["number"]).to_numpy()
                    for column in columns
                ]
            )
        )

    def records(self) -> Iterator[SentValues]:
        """The values VALUES at a time, each with the rows it is in (ascending, once)."""
        if self.pending:
            self._number()
        if not self.held:  # no reference column
            return
        held, self.held = np.concatenate(self.held).astype(np.int64), []
        held <<= 32  # a value's number, then its row: sorted, by value then row
        held |= np.arange(len(held), dtype=np.int64)[:, None]
        found = held.ravel()  # in place: 120 MB at 5M enrollments, each copy counts
        found.sort()
        kept = np.empty(len(found), dtype=bool)
        kept[:1] = True
        np.not_equal(found[1:], found[:-1], out=kept[1:])  # a row holding a value twice: once
        if (empty := self.numbers.get("")) is not None:  # an empty cell: no search finds it
            kept[slice(*np.searchsorted(found, [empty << 32, (empty + 1) << 32]))] = False
        found = found[kept]
        del held, kept
        bounds = np.arange(1, len(self.numbers) + 1, dtype=np.int64) << 32
        ends = np.searchsorted(found, bounds).astype(np.int32)
        rows = found.astype(np.int32)  # the low 32 bits
        del found
        texts = list(self.numbers)
        for first in range(0, len(texts), VALUES):
            last = min(first + VALUES, len(texts))
            start = ends[first - 1] if first else 0
            yield SentValues(
                first=first,
                terms=ROW.join(texts[first:last]),
                rows=rows[start : ends[last - 1]].tobytes(),
                ends=(ends[first:last] - start).tobytes(),
            )


class _Keys:
    """The rows' own IDs (in a file that names no one), casefolded, one after another in
    UTF-8 with an LF after each, and the row of each; sorted in byte order at the end. A row
    holding several (a key of two columns that refer to nothing) has a value for each."""

    def __init__(self) -> None:
        self.text = bytearray()
        self.rows: list[np.ndarray] = []

    def add(self, columns: list[str], first: int) -> None:
        """Each key column's cells of the rows from `first` on, casefolded, LF between."""
        for joined in columns:
            self.text += joined.encode() + b"\n"
            self.rows.append(np.arange(first, first + joined.count(ROW) + 1, dtype=np.int32))

    def records(self) -> Iterator[SentKeys]:
        """The values KEYS at a time, in byte order (equal ones by row), empty ones left out
        (no search finds them)."""
        if not self.rows:
            return
        self.text += bytes(8)  # an 8-byte key read from the last value stays inside
        text = np.frombuffer(self.text, dtype=np.uint8)
        ends = np.flatnonzero(text[:-8] == ord(ROW)) + 1  # each value's, after its LF
        with_lf = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            len(ends),
            [None, pa.py_buffer(np.append(0, ends)), pa.py_buffer(self.text)],
        )
        starts = np.frombuffer(with_lf.buffers()[1], dtype=np.int64)[:-1]
        ends -= starts + 1  # now each value's length
        held = np.flatnonzero(ends)
        order = held[_byte_order(text, starts[held], ends[held])]
        del ends, starts, held
        rows, self.rows = np.concatenate(self.rows), []
        rows = rows[order]
        for batch in range(0, len(order), KEYS * SAVED):  # a copy of their bytes at a time
            taken = with_lf.take(order[batch : batch + KEYS * SAVED])
            offsets = np.frombuffer(taken.buffers()[1], dtype=np.int64)[: len(taken) + 1]
            data = taken.buffers()[2].to_pybytes()
            for first in range(0, len(taken), KEYS):
                last = min(first + KEYS, len(taken))
                terms = data[offsets[first] : offsets[last] - 1]
                yield SentKeys(
                    first=terms.split(b"\n", 1)[0][:KEYED],
                    terms=terms.decode(),
                    rows=rows[batch + first : batch + last].tobytes(),
                )


# The bytes of a key that its first n (0-8) of a value's bytes keep.
_HELD = np.array([(1 << 64) - (1 << (64 - 8 * n)) for n in range(9)], dtype=np.uint64)


def _key(text: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The 8 bytes of `text` from each start as a big-endian uint64, zeros past its length
    (`text` goes on 8 bytes after the last value)."""
    window = np.ndarray((len(text) - 7,), dtype=">u8", buffer=text, strides=(1,))
    key: np.ndarray = window[starts].astype(np.uint64) & _HELD[np.clip(lengths, 0, 8)]
    return key


def _byte_order(text: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The order of the values (`lengths` bytes of `text` from `starts`) by their bytes,
    equal ones as given: sorted by their first 8 bytes, then those that tie by the next 8,
    and so on (random IDs hardly ever tie; IDs that share a long start are sorted again for
    each 8 bytes of it). 5M GUIDs: ~1 s CPU, against 1.9-3 s sorted as strings (numpy,
    polars, Python)."""
    key = _key(text, starts, lengths)
    order = np.argsort(key, kind="stable")
    group = np.zeros(len(order), dtype=np.int64)  # the first place of its tie in `order`
    tied = _tied(np.arange(len(order)), group, key[order], lengths[order] > 8)
    depth = 8
    while len(tied):
        held = order[tied]
        key = _key(text, starts[held] + depth, lengths[held] - depth)
        ordered = np.lexsort((key, group[tied]))  # each tie in its places
        order[tied] = held = held[ordered]
        tied = _tied(tied, group, key[ordered], lengths[held] > depth + 8)
        depth += 8
    return order


def _tied(places: np.ndarray, group: np.ndarray, key: np.ndarray, going: np.ndarray) -> np.ndarray:
    """Those of `places` (ascending in the order, `key` and `going` of each) that tie with a
    neighbour, on the key and in the same group, where a value of the tie goes on after the
    key (no value holds a NUL: values whose keys tie are the same so far); `group` gets the
    first place of each tie."""
    groups = group[places]
    same = (groups[1:] == groups[:-1]) & (key[1:] == key[:-1])  # as the next one
    ties = np.zeros(len(places), dtype=bool)
    ties[1:] |= same
    ties[:-1] |= same
    tie = np.flatnonzero(ties)
    starting = np.ones(len(tie), dtype=bool)
    starting[1:] = ~same[tie[1:] - 1]
    run = np.cumsum(starting) - 1
    group[places[tie]] = places[tie][starting][run]
    again: np.ndarray = places[tie[(np.bincount(run, weights=going[tie]) > 0)[run]]]
    return again


@dataclass
class _Cells:
    """The searched cells of consecutive rows."""

    terms: list[str]  # each row's, casefolded, CELL between (none kept: "")
    values: list[pl.Series]  # a Series per reference column
    keys: list[str]  # the rows' own IDs of each key column, casefolded, LF between


class _Rows:
    """Rows as they are read (the line each starts on, its byte offset, its searched cells),
    cut into blocks of BLOCK rows (a block's offsets end where the next row starts), handed
    to `save` SAVED at a time: a file's index is never all in memory. The cells of its
    reference columns, if any, go to `values`, those of its own IDs to `keys`: saved at the
    end."""

    def __init__(self, header_end: int, save: Save, row_terms: bool) -> None:
        self.built = _Built(header_end=header_end, rows=0, row_terms=row_terms)
        self.save, self.blocks = save, list[Record]()
        self.lines = np.empty(0, dtype=np.int64)
        self.starts = np.empty(0, dtype=np.int64)
        self.terms: list[str] = []
        self.values = _Values()
        self.keys = _Keys()

    def add(self, lines: np.ndarray, starts: np.ndarray, cells: _Cells) -> None:
        if cells.keys and cells.terms:
            self.keys.add(cells.keys, self.built.rows + len(self.terms))
        self.lines = np.concatenate((self.lines, lines))
        self.starts = np.concatenate((self.starts, starts))
        self.terms.extend(cells.terms)
        if cells.values:
            self.values.add(cells.values)
        self._cut(max(len(self.terms) - 1, 0) // BLOCK * BLOCK)  # the start of one row kept

    def end(self, at: int) -> _Built:
        """The last block, its last row ending at `at`; then the values and keys."""
        self.starts = np.append(self.starts, at)
        self._cut(len(self.terms))
        for values in self.values.records():
            self._keep(values)
        self.values = _Values()  # its distinct values, not needed while the keys are sorted
        for keys in self.keys.records():
            self._keep(keys)
        self.save(self.blocks)
        return self.built

    def _cut(self, rows: int) -> None:
        for first in range(0, rows, BLOCK):
            last = min(first + BLOCK, rows)
            self._keep(
                SentBlock(
                    first=self.built.rows + first,
                    lines=self.lines[first:last].tobytes(),
                    offsets=self.starts[first : last + 1].tobytes(),
                    terms=ROW.join(self.terms[first:last]),
                )
            )
        self.built.rows += rows
        self.lines, self.starts, self.terms = (
            self.lines[rows:],
            self.starts[rows:],
            self.terms[rows:],
        )

    def _keep(self, record: Record) -> None:
        self.blocks.append(record)
        if len(self.blocks) >= SAVED:
            self.save(self.blocks)
            self.blocks = []


def _chunks(stream: BinaryIO, head: bytes) -> Iterator[bytes]:
    """The stream in pieces of about CHUNK bytes, each ending at a line end (the last where
    the stream does)."""
    rest = head
    while True:
        data = stream.read(CHUNK)
        chunk = rest + data
        cut = chunk.rfind(b"\n") + 1 if data else len(chunk)
        chunk, rest = chunk[:cut], chunk[cut:]
        if chunk:
            yield chunk
        elif not data:
            return


def _plain(chunk: bytes) -> bool:
    """Whether every line of a chunk is one row whose cells are its commas' pieces: no quote,
    no CR but before an LF (a line end), no NUL, and UTF-8 (else: the csv module reads it)."""
    if b'"' in chunk or b"\x00" in chunk:
        return False
    if b"\r" in chunk and chunk.count(b"\r") != chunk.count(b"\r\n"):
        return False
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass
class _Kept:
    by_row: list[int]  # positions of the columns kept with each row
    by_value: list[int]  # of those kept as distinct values
    by_key: list[int]  # of the rows' own IDs kept in byte order
    width: int  # the header's


def _split(chunk: bytes, lines: int, kept: _Kept) -> _Cells | None:
    """The searched cells of each line of a plain chunk, parsed by polars (a third of the
    csv module's CPU); None where polars does not see one row a line: the csv module then
    reads it."""
    try:
        frame = polars_csv.read_csv(
            chunk,
            has_header=False,
            schema={f"column_{i + 1}": pl.String for i in range(kept.width)},
            columns=kept.by_row + kept.by_value + kept.by_key,
            quote_char=None,
            truncate_ragged_lines=True,
            missing_columns="insert",
            extra_columns="ignore",
        )
    except pl.exceptions.PolarsError:
        return None
    if frame.height != lines:
        return None
    values = [frame[f"column_{i + 1}"].fill_null("") for i in kept.by_value]
    keys = [
        frame[f"column_{i + 1}"].fill_null("").str.join(ROW).item().casefold() for i in kept.by_key
    ]
    if not kept.by_row:
        return _Cells(terms=[""] * lines, values=values, keys=keys)
    cells = pl.concat_str(
        [pl.col(f"column_{i + 1}").fill_null("") for i in kept.by_row], separator=CELL
    )
    joined: str = frame.select(cells.str.strip_chars_end(CELL).str.join(ROW)).item()
    return _Cells(terms=joined.casefold().split(ROW), values=values, keys=keys)


def _csv_lines(chunks: Iterable[bytes], at: int, fallback: str, starts: list[int]) -> Iterator[str]:
    """The chunks' lines as text, without their LF (the csv module needs none); `starts`
    gets where each line starts (from `at`), and the end of the last, before the lines of
    its chunk are handed out."""
    for chunk in chunks:
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord(ROW)) + 1 + at
        starts.extend(ends.tolist())
        if not chunk.endswith(b"\n"):
            starts.append(at + len(chunk))
        at += len(chunk)
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        try:
            yield from chunk.decode("utf-8").split(ROW)[: len(lines)]
        except UnicodeDecodeError:
            yield from (text(line, fallback) for line in lines)


@dataclass
class _Header:
    cells: list[str]
    end: int  # its bytes
    lines: int
    rest: Iterator[bytes]  # the chunks after it


def _header(chunks: Iterator[bytes], fallback: str) -> _Header:
    first = next(chunks, b"")
    starts = [0]
    reader = csv.reader(_csv_lines([first], 0, fallback, starts))
    cells = next(reader, [])
    end = starts[reader.line_num]
    rest = itertools.chain([first[end:]] if first[end:] else [], chunks)
    return _Header(cells=cells, end=end, lines=reader.line_num, rest=rest)


def _read(
    chunks: Iterator[bytes], at: int, line: int, kept: _Kept, rows: _Rows, fallback: str
) -> _Built:
    """The rest of a file, from byte `at` on line `line`, read with the csv module."""
    starts = [at]  # of each line from there, and the end of the last one read
    reader = csv.reader(_csv_lines(chunks, at, fallback, starts))
    read = [0]  # lines read after each row (none before the first)
    terms: list[str] = []
    values: list[list[str]] = [[] for _ in kept.by_value]
    keys: list[list[str]] = [[] for _ in kept.by_key]
    for row in reader:
        read.append(reader.line_num)
        cells = [row[i] if i < len(row) else "" for i in kept.by_row]
        # No CELL at the end: polars reads a missing cell as an empty one (in _split).
        terms.append(_fold(CELL.join(cells)).rstrip(CELL))
        for column, i in zip(values + keys, kept.by_value + kept.by_key, strict=True):
            column.append(row[i] if i < len(row) else "")
        if len(terms) == BLOCK:
            _add(rows, line, read, starts, terms, values, keys)
            read, terms = read[-1:], []
            values, keys = [[] for _ in kept.by_value], [[] for _ in kept.by_key]
    _add(rows, line, read, starts, terms, values, keys)
    return rows.end(starts[read[-1]])


def _add(
    rows: _Rows,
    line: int,
    read: list[int],
    starts: list[int],
    terms: list[str],
    values: list[list[str]],
    keys: list[list[str]],
) -> None:
    """Rows read by the csv module: each starts on the line after those read before it."""
    before = np.asarray(read[:-1], dtype=np.int64)
    rows.add(
        before + line,
        np.asarray([starts[n] for n in read[:-1]], dtype=np.int64),
        _Cells(
            terms=terms,
            values=[pl.Series(column, dtype=pl.String) for column in values],
            keys=[_fold(ROW.join(column)) for column in keys],
        ),
    )


def _build(stream: BinaryIO, spec: FileSpec, fallback: str, save: Save) -> _Built | None:
    """The blocks of one file, handed to `save`; None when it cannot be indexed (UTF-16,
    old-Mac line ends, not CSV): the page then reads it as before. Plain chunks (most, in a
    generated or exported file) are parsed by polars; from the first that is not, the csv
    module reads the rest."""
    head = stream.read(4)
    if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    try:
        header = _header(_chunks(stream, head), fallback)
        wanted = columns(spec)
        kept = _Kept(
            by_row=_positions(header.cells, spec, wanted.by_row),
            by_value=_positions(header.cells, spec, wanted.by_value),
            by_key=_positions(header.cells, spec, wanted.by_key),
            width=len(header.cells),
        )
        if not kept.by_row and not kept.by_value and not kept.by_key:
            return None
        rows = _Rows(header.end, save, row_terms=bool(kept.by_row))
        at, line, chunks = header.end, header.lines + 1, header.rest
        for chunk in chunks:
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord(ROW))
            starts = np.concatenate(([0], ends + 1))[: len(ends) + (chunk[-1:] != b"\n")]
            cells = _split(chunk, len(starts), kept) if _plain(chunk) else None
            if cells is None:
                return _read(itertools.chain([chunk], chunks), at, line, kept, rows, fallback)
            rows.add(np.arange(line, line + len(cells.terms), dtype=np.int64), starts + at, cells)
            at, line = at + len(chunk), line + len(cells.terms)
        return rows.end(at)
    except csv.Error:
        return None


@timed("sent index")
def keep(
    district: District, uploads: list[Upload], paths: list[Path], spec: FormatSpec, limits: Limits
) -> None:
    """Index the files of a sync's uploads (`paths`: their local copies, named as sent),
    unless the same bytes were indexed before."""
    by_name = {upload.filename: upload for upload in uploads}
    done = set(
        SentFile.objects.filter(
            district=district, sha256__in=[u.sha256 for u in uploads]
        ).values_list("sha256", "name")
    )
    try:
        members = unpack(paths, limits)
    except Failure:
        return
    for member in members:
        upload = by_name.get(member.package or member.name)
        claimed = spec.claim(member.name).name
        file_spec = spec.file(claimed) if claimed else None
        if upload is None or file_spec is None or (upload.sha256, member.name) in done:
            continue
        try:
            with transaction.atomic():
                sent = SentFile.objects.create(
                    district=district, sha256=upload.sha256, name=member.name, rows=0, header_end=0
                )
                with member.open() as stream:
                    built = _build(stream, file_spec, district.fallback_encoding, _saver(sent))
                if built is None:  # not indexable: the page reads the file
                    transaction.set_rollback(True)
                else:
                    sent.rows, sent.header_end = built.rows, built.header_end
                    sent.row_terms = built.row_terms
                    sent.save(update_fields=["rows", "header_end", "row_terms"])
        # The index is a shortcut: an import never fails for it (rolled back to before this
        # file, whatever went wrong: a database error, an unreadable member).
        except Exception:
            log.exception("%s of upload %s was not indexed", member.name, upload.pk)


def _saver(sent: SentFile) -> Save:
    def save(records: list[Record]) -> None:
        for record in records:
            record.file = sent
        SentBlock.objects.bulk_create([r for r in records if isinstance(r, SentBlock)], 100)
        SentValues.objects.bulk_create([r for r in records if isinstance(r, SentValues)], 100)
        SentKeys.objects.bulk_create([r for r in records if isinstance(r, SentKeys)], 100)

    return save


def indexed(upload: Upload, name: str) -> SentFile | None:
    return SentFile.objects.filter(
        district_id=upload.district_id, sha256=upload.sha256, name=name
    ).first()


@dataclass
class Found:
    """A page of a search: each row's line and byte span, and how many rows match in all."""

    header: Span
    rows: list[tuple[int, Span]]
    matched: int


def _matches(terms: str, needle: str) -> Iterator[int]:
    """The numbers of the lines of `terms` (in a block: its rows) that contain `needle`."""
    at = terms.find(needle)
    row, counted = 0, 0
    while at >= 0:
        row += terms.count(ROW, counted, at)
        yield row
        end = terms.find(ROW, at)
        if end < 0:
            return
        row += 1
        counted = end + 1
        at = terms.find(needle, counted)


def find(sent: SentFile, query: str, offset: int, limit: int) -> Found:
    """The rows of an indexed file holding `query` in an ID or name cell, or whose own ID
    starts with it in a file that names no one (casefolded, as the page always compared),
    `limit` of them from the `offset`-th; every row without a query."""
    needle = query.casefold().replace(ROW, "").replace(CELL, "").replace("\x00", "")
    found = Found(header=(0, sent.header_end), rows=[], matched=0)
    blocks = SentBlock.objects.filter(file=sent).order_by("first")
    if not needle:
        found.matched = sent.rows
        first = offset - offset % BLOCK
        blocks = blocks.filter(first__gte=first, first__lt=offset + limit)
        found.rows = _rows(blocks, lambda block: range(_count(block)), offset - first, limit)
        return found
    found_in: list[np.ndarray] = [np.empty(0, dtype=np.int64), *_starting(sent, needle)]
    if sent.row_terms:
        for block, numbers in _holding(SentBlock.objects.filter(file=sent), needle, "first"):
            found_in.append(np.asarray(numbers, dtype=np.int64) + block.first)
    for values, numbers in _holding(SentValues.objects.filter(file=sent), needle, "rows", "ends"):
        rows = np.frombuffer(bytes(values.rows), dtype=np.int32)
        ends = np.frombuffer(bytes(values.ends), dtype=np.int32)
        found_in.extend(rows[(ends[n - 1] if n else 0) : ends[n]] for n in numbers)
    matched = np.unique(np.concatenate(found_in))  # in file order, each row once
    found.matched = len(matched)
    firsts = np.asarray(blocks.values_list("first", flat=True), dtype=np.int64)
    wanted: dict[int, list[int]] = {}
    for row in matched[offset : offset + limit].tolist():
        first = int(firsts[np.searchsorted(firsts, row, side="right") - 1])
        wanted.setdefault(first, []).append(row - first)
    found.rows = _rows(blocks.filter(first__in=wanted), lambda block: wanted[block.first], 0, limit)
    return found


Searched = TypeVar("Searched", SentBlock, SentValues)


def _holding(
    records: QuerySet[Searched], needle: str, *fields: str
) -> Iterator[tuple[Searched, list[int]]]:
    """The records whose terms hold `needle`, with the numbers of their lines that do."""
    # strpos/instr: PostgreSQL's LIKE '%...%' is several times slower over UTF-8 text.
    holding = records.annotate(at=StrIndex("terms", Value(needle))).filter(at__gt=0)
    for record in holding.only("terms", *fields):
        yield record, list(_matches(record.terms, needle))


def _starting(sent: SentFile, needle: str) -> Iterator[np.ndarray]:
    """The rows whose own ID starts with `needle`: they are in the SentKeys whose first value
    starts with its first KEYED bytes, and maybe at the end of the one before those."""
    start = needle.encode()[:KEYED]
    after = start[:-1] + bytes([start[-1] + 1])  # UTF-8 has no 0xff byte
    keys = SentKeys.objects.filter(file=sent)
    before = keys.filter(first__lt=start).order_by("-first", "-pk")[:1]
    for record in itertools.chain(keys.filter(first__gte=start, first__lt=after), before):
        values = record.terms.split(ROW)
        first = last = bisect.bisect_left(values, needle)  # code points: UTF-8's byte order
        while last < len(values) and values[last].startswith(needle):
            last += 1
        yield np.frombuffer(bytes(record.rows), dtype=np.int32)[first:last]


def _count(block: SentBlock) -> int:
    return len(block.lines) // 8


def _rows(
    blocks: QuerySet[SentBlock],
    numbers: Callable[[SentBlock], Iterable[int]],
    skip: int,
    limit: int,
) -> list[tuple[int, Span]]:
    """(line, (start, end)) of the given rows of each block, `skip` rows left out first."""
    rows: list[tuple[int, Span]] = []
    for block in blocks.defer("terms"):
        lines = np.frombuffer(bytes(block.lines), dtype=np.int64)
        offsets = np.frombuffer(bytes(block.offsets), dtype=np.int64)
        for n in numbers(block):
            rows.append((int(lines[n]), (int(offsets[n]), int(offsets[n + 1]))))
    return rows[skip : skip + limit]


def forget(sender: object, upload: Upload, **kwargs: object) -> None:
    """Retention deleted an upload's bytes: its index goes with the last copy of them."""
    kept = Upload.objects.filter(
        district_id=upload.district_id, sha256=upload.sha256, purged_at__isnull=True
    ).exclude(stored_path="")
    if not kept.exists():
        SentFile.objects.filter(district_id=upload.district_id, sha256=upload.sha256).delete()
