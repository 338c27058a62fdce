"""SIS search from an index built at import, never by reading a whole raw file per request.

Searching the rows of a file as sent read the whole file on each request: 2.4 s for users.csv
at 500k students. When a sync is imported, each of its people and roster files (those with a
name column: users, classes, courses, orgs...) is read once more from the local copy the
import already fetched, and its rows are kept in blocks of BLOCK: each row's physical line
and byte offset, and its ID and name cells casefolded. A search looks for the text in those
cells (as the page did in every cell, case-insensitive) in the database, and the page reads
only the rows it shows, by offset (ranged reads on S3).

An index is keyed by the bytes it was built from (the upload's sha256, and the file's name
in it), so that a re-sent upload finds it again; retention deletes it with the last upload
of those bytes (`forget`, on inbox.signals.upload_purged).
"""

import csv
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import BinaryIO

import numpy as np
from django.db import DatabaseError, transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import StrIndex

from rosterdrop.districts.models import District
from rosterdrop.formats.spec import FileSpec, FormatSpec
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.models import SentBlock, SentFile
from rosterdrop.ingest.unpack import Limits, unpack
from rosterdrop.roster.schema import NAME_FIELDS
from rosterdrop.timing import timed

log = logging.getLogger(__name__)

BLOCK = 1024
CHUNK = 16 << 20
# The canonical fields searched besides the key: names, and the ID a district gives people.
SEARCHED = NAME_FIELDS | {"identifier"}
CELL, ROW = "\x1f", "\n"
Span = tuple[int, int]  # bytes from, to (excluded)
Picked = list[tuple[SentBlock, list[int]]]  # blocks, with the numbers of rows in each


def searched_columns(spec: FileSpec) -> set[str]:
    """The spec's column names an index keeps of its rows: its outputs' keys and name
    columns; none for a file that names nothing (enrollments, demographics)."""
    names = {
        source
        for output in spec.outputs
        for field, source in output.fields.items()
        if field in SEARCHED and isinstance(source, str)
    }
    if not names & {c.name for c in spec.columns}:
        return set()
    return names | {key for output in spec.outputs for key in output.key}


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
    blocks: list[SentBlock]


def _lines(stream: BinaryIO, head: bytes, fallback: str, starts: list[int]) -> Iterator[str]:
    """The stream's lines as text, without their LF (the csv module needs none), read a
    chunk at a time; `starts` gets where each line starts, and the end of the last one
    handed out, before its chunk's lines are."""
    base, rest = 0, head
    while True:
        data = stream.read(CHUNK)
        chunk = rest + data
        cut = chunk.rfind(b"\n") + 1 if data else len(chunk)
        chunk, rest = chunk[:cut], chunk[cut:]
        if not chunk:
            return
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord(ROW)) + 1 + base
        starts.extend(ends.tolist())
        if not chunk.endswith(b"\n"):
            starts.append(base + len(chunk))
        base += len(chunk)
        lines = chunk.split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        try:
            yield from chunk.decode("utf-8").split(ROW)[: len(lines)]
        except UnicodeDecodeError:
            yield from (text(line, fallback) for line in lines)


def _build(stream: BinaryIO, spec: FileSpec, fallback: str) -> _Built | None:
    """The blocks of one file; None when it cannot be indexed (UTF-16, old-Mac line ends,
    not CSV): the page then reads it as before."""
    head = stream.read(4)
    if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    starts = [0]  # of each line (0: line 1), and the end of the last one read
    reader = csv.reader(_lines(stream, head, fallback, starts))
    try:
        header = next(reader, None)
        if header is None:
            return None
        wanted = searched_columns(spec)
        columns = [
            i
            for i, name in enumerate(header)
            if (column := spec.column(name.lstrip("\ufeff"))) and column.name in wanted
        ]
        if not columns:
            return None
        cells = itemgetter(*columns, 0)  # a tuple, even of one column
        built = _Built(header_end=starts[reader.line_num], rows=0, blocks=[])
        read = [reader.line_num]  # lines read after each row (the header first)
        terms: list[str] = []
        for row in reader:
            read.append(reader.line_num)
            try:
                kept = cells(row)[:-1]
            except IndexError:
                kept = tuple(row[i] for i in columns if i < len(row))
            # No NUL: PostgreSQL text refuses it (the import cleaned the cell, not this copy).
            terms.append(CELL.join(kept).casefold().replace("\x00", ""))
            if len(terms) == BLOCK:
                built.blocks.append(_block(built.rows, read, starts, terms))
                built.rows += len(terms)
                read, terms = read[-1:], []
        if terms:
            built.blocks.append(_block(built.rows, read, starts, terms))
            built.rows += len(terms)
    except csv.Error:
        return None
    return built


def _block(first: int, read: list[int], starts: list[int], terms: list[str]) -> SentBlock:
    """Rows `first`... : each starts on the line after those read before it."""
    before = np.asarray(read, dtype=np.int64)
    return SentBlock(
        first=first,
        lines=(before[:-1] + 1).tobytes(),
        offsets=np.asarray([starts[n] for n in read], dtype=np.int64).tobytes(),
        terms=ROW.join(terms),
    )


@timed("sent index")
def keep(
    district: District, uploads: list[Upload], paths: list[Path], spec: FormatSpec, limits: Limits
) -> None:
    """Index the people and roster files of a sync's uploads (`paths`: their local copies,
    named as sent), unless the same bytes were indexed before."""
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
            with member.open() as stream:
                built = _build(stream, file_spec, district.fallback_encoding)
        except Exception:  # the index is a shortcut: an import never fails for it
            log.exception("%s of upload %s was not indexed", member.name, upload.pk)
            continue
        if built is None:
            continue
        try:
            with transaction.atomic():
                sent = SentFile.objects.create(
                    district=district,
                    sha256=upload.sha256,
                    name=member.name,
                    rows=built.rows,
                    header_end=built.header_end,
                )
                for block in built.blocks:
                    block.file = sent
                SentBlock.objects.bulk_create(built.blocks, batch_size=100)
        except DatabaseError:  # rolled back to before this file: the import goes on
            log.exception("%s of upload %s was not indexed", member.name, upload.pk)


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
