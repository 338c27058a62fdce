"""SIS search from an index built at import, never by reading a whole raw file per request.

Searching the rows of a file as sent read the whole file on each request: 2.4 s for users.csv
at 500k students, 10 s for enrollments.csv at 5M enrollments. When a sync is imported, each
of its files the format knows is read once more from the local copy the import already
fetched (by polars where a stretch of it has no quotes, else the csv module), and its rows
are kept in blocks of BLOCK: each row's physical line and byte offset, and its ID and name
cells casefolded (in a file that names no one, such as enrollments.csv, its ID and the IDs
it refers to). A search looks for the text in those cells (as the page did in every cell,
case-insensitive) in the database, and the page reads only the rows it shows, by offset
(ranged reads on S3).

An index is keyed by the bytes it was built from (the upload's sha256, and the file's name
in it), so that a re-sent upload finds it again; retention deletes it with the last upload
of those bytes (`forget`, on inbox.signals.upload_purged).
"""

import csv
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
from django.db import transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import StrIndex

from rosterdrop.districts.models import District
from rosterdrop.formats.spec import FileSpec, FormatSpec
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.models import SentBlock, SentFile
from rosterdrop.ingest.unpack import Limits, unpack
from rosterdrop.roster.schema import NAME_FIELDS, REFS
from rosterdrop.timing import timed

log = logging.getLogger(__name__)

BLOCK = 1024
SAVED = 64  # blocks written at a time
CHUNK = 4 << 20
# The canonical fields searched besides the key: names, and the ID a district gives people.
SEARCHED = NAME_FIELDS | {"identifier"}
CELL, ROW = "\x1f", "\n"
Span = tuple[int, int]  # bytes from, to (excluded)
Picked = list[tuple[SentBlock, list[int]]]  # blocks, with the numbers of rows in each


def searched_columns(spec: FileSpec) -> set[str]:
    """The spec's column names an index keeps of its rows: its outputs' keys and name
    columns; for a file that names no one (enrollments, demographics), its keys and the
    single IDs it refers to (a user, a class, a school)."""
    names = {
        source
        for output in spec.outputs
        for field, source in output.fields.items()
        if field in SEARCHED and isinstance(source, str)
    }
    keys = {key for output in spec.outputs for key in output.key}
    if names & {c.name for c in spec.columns}:
        return names | keys
    refs = {ref.field for ref in REFS.get(spec.outputs[0].entity, ()) if not ref.many}
    return keys | {
        source
        for output in spec.outputs
        for field, source in output.fields.items()
        if field in refs and isinstance(source, str)
    }


def searched_in(header: list[str], spec: FileSpec) -> list[int]:
    """The positions in a file's header of the columns its index keeps."""
    wanted = searched_columns(spec)
    return [
        i
        for i, name in enumerate(header)
        if (column := spec.column(name.lstrip("\ufeff"))) and column.name in wanted
    ]


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


Save = Callable[[list[SentBlock]], None]


class _Rows:
    """Rows as they are read (the line each starts on, its byte offset, its searched cells),
    cut into blocks of BLOCK rows (a block's offsets end where the next row starts), handed
    to `save` SAVED at a time: a file's index is never all in memory (740 MB of enrollments'
    IDs at 5M rows)."""

    def __init__(self, header_end: int, save: Save) -> None:
        self.built = _Built(header_end=header_end, rows=0)
        self.save, self.blocks = save, list[SentBlock]()
        self.lines = np.empty(0, dtype=np.int64)
        self.starts = np.empty(0, dtype=np.int64)
        self.terms: list[str] = []

    def add(self, lines: np.ndarray, starts: np.ndarray, terms: list[str]) -> None:
        self.lines = np.concatenate((self.lines, lines))
        self.starts = np.concatenate((self.starts, starts))
        self.terms.extend(terms)
        self._cut(max(len(self.terms) - 1, 0) // BLOCK * BLOCK)  # the start of one row kept

    def end(self, at: int) -> _Built:
        """The last block, its last row ending at `at`."""
        self.starts = np.append(self.starts, at)
        self._cut(len(self.terms))
        self.save(self.blocks)
        return self.built

    def _cut(self, rows: int) -> None:
        for first in range(0, rows, BLOCK):
            last = min(first + BLOCK, rows)
            self.blocks.append(
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


def _split(chunk: bytes, lines: int, columns: list[int], width: int) -> list[str] | None:
    """The searched cells of each line of a plain chunk, parsed by polars (a third of the
    csv module's CPU); None where polars does not see one row a line: the csv module then
    reads it."""
    try:
        frame = pl.read_csv(
            chunk,
            has_header=False,
            schema={f"column_{i + 1}": pl.String for i in range(width)},
            columns=columns,
            quote_char=None,
            truncate_ragged_lines=True,
            missing_columns="insert",
            extra_columns="ignore",
        )
    except pl.exceptions.PolarsError:
        return None
    if frame.height != lines:
        return None
    cells = pl.concat_str([pl.col(c).fill_null("") for c in frame.columns], separator=CELL)
    joined: str = frame.select(cells.str.strip_chars_end(CELL).str.join(ROW)).item()
    return joined.casefold().split(ROW)


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
    chunks: Iterator[bytes], at: int, line: int, columns: list[int], rows: _Rows, fallback: str
) -> _Built:
    """The rest of a file, from byte `at` on line `line`, read with the csv module."""
    starts = [at]  # of each line from there, and the end of the last one read
    reader = csv.reader(_csv_lines(chunks, at, fallback, starts))
    cells = itemgetter(*columns, 0)  # a tuple, even of one column
    read = [0]  # lines read after each row (none before the first)
    terms: list[str] = []
    for row in reader:
        read.append(reader.line_num)
        try:
            kept = cells(row)[:-1]
        except IndexError:
            kept = tuple(row[i] for i in columns if i < len(row))
        # No NUL: PostgreSQL text refuses it (the import cleaned the cell, not this copy).
        # No CELL at the end: polars reads a missing cell as an empty one (in _split).
        terms.append(CELL.join(kept).rstrip(CELL).casefold().replace("\x00", ""))
        if len(terms) == BLOCK:
            _add(rows, line, read, starts, terms)
            read, terms = read[-1:], []
    _add(rows, line, read, starts, terms)
    return rows.end(starts[read[-1]])


def _add(rows: _Rows, line: int, read: list[int], starts: list[int], terms: list[str]) -> None:
    """Rows read by the csv module: each starts on the line after those read before it."""
    before = np.asarray(read[:-1], dtype=np.int64)
    rows.add(before + line, np.asarray([starts[n] for n in read[:-1]], dtype=np.int64), terms)


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
        columns = searched_in(header.cells, spec)
        if not columns:
            return None
        rows, width = _Rows(header.end, save), len(header.cells)
        at, line, chunks = header.end, header.lines + 1, header.rest
        for chunk in chunks:
            ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord(ROW))
            starts = np.concatenate(([0], ends + 1))[: len(ends) + (chunk[-1:] != b"\n")]
            terms = _split(chunk, len(starts), columns, width) if _plain(chunk) else None
            if terms is None:
                return _read(itertools.chain([chunk], chunks), at, line, columns, rows, fallback)
            rows.add(np.arange(line, line + len(terms), dtype=np.int64), starts + at, terms)
            at, line = at + len(chunk), line + len(terms)
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
                    sent.save(update_fields=["rows", "header_end"])
        # The index is a shortcut: an import never fails for it (rolled back to before this
        # file, whatever went wrong: a database error, an unreadable member).
        except Exception:
            log.exception("%s of upload %s was not indexed", member.name, upload.pk)


def _saver(sent: SentFile) -> Save:
    def save(blocks: list[SentBlock]) -> None:
        for block in blocks:
            block.file = sent
        SentBlock.objects.bulk_create(blocks, batch_size=100)

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
    """The numbers (in the block) of the rows whose searched cells contain `needle`."""
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
    """The rows of an indexed file holding `query` in an ID or name cell (casefolded, as the
    page always compared), `limit` of them from the `offset`-th; every row without a query."""
    needle = query.casefold().replace(ROW, "").replace(CELL, "").replace("\x00", "")
    found = Found(header=(0, sent.header_end), rows=[], matched=0)
    blocks = SentBlock.objects.filter(file=sent).order_by("first")
    if not needle:
        found.matched = sent.rows
        first = offset - offset % BLOCK
        blocks = blocks.filter(first__gte=first, first__lt=offset + limit)
        found.rows = _rows(blocks, lambda block: range(_count(block)), offset - first, limit)
        return found
    matched: Picked = []
    # strpos/instr: PostgreSQL's LIKE '%...%' is several times slower over UTF-8 text.
    holding = blocks.annotate(at=StrIndex("terms", Value(needle))).filter(at__gt=0)
    for block in holding.only("first", "terms"):
        numbers = list(_matches(block.terms, needle))
        if numbers:
            matched.append((block, numbers))
            found.matched += len(numbers)
    shown = _page(matched, offset, limit)
    wanted = {block.pk: numbers for block, numbers in shown}
    found.rows = _rows(
        SentBlock.objects.filter(pk__in=wanted).order_by("first"),
        lambda block: wanted[block.pk],
        0,
        limit,
    )
    return found


def _count(block: SentBlock) -> int:
    return len(block.lines) // 8


def _page(matched: Picked, offset: int, limit: int) -> Picked:
    """The blocks and row numbers of the `limit` matches from the `offset`-th."""
    shown: Picked = []
    seen = 0
    for block, numbers in matched:
        part = numbers[max(offset - seen, 0) : max(offset + limit - seen, 0)]
        seen += len(numbers)
        if part:
            shown.append((block, part))
    return shown


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
