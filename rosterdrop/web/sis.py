"""The files of an upload as the district sent them (no extraction to disk), and the rows of
one found through its index (ingest.sent_index) read by offset."""

import contextlib
import csv
import io
from collections.abc import Iterator

from rosterdrop.formats import get_format
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import local_copy, read_spans
from rosterdrop.ingest import sent_index
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.reader import limits
from rosterdrop.ingest.sent_rows import Rows
from rosterdrop.ingest.unpack import Member, is_zip, unpack


@contextlib.contextmanager
def members(upload: Upload | None) -> Iterator[dict[str, Member]]:
    """The CSV files of an upload by name, readable while the block runs: a zip's members, or
    the file itself; none once retention deleted it."""
    with local_copy(upload) if upload else contextlib.nullcontext() as path:
        if path is None or upload is None:
            yield {}
        elif is_zip(path):
            try:
                found = {m.name: m for m in unpack([path], limits())}
            except Failure:
                found = {}
            yield found
        else:
            raw = Member(upload.filename, upload.size, lambda: path.open("rb"), "")
            yield {upload.filename: raw}


def names(upload: Upload | None) -> list[str]:
    """The CSV files of an upload, without reading a loose file's bytes (its name is its
    file's); a zip's members from its directory."""
    if upload is None or not upload.stored_path:
        return []
    if not upload.filename.lower().endswith(".zip"):
        return [upload.filename]
    with members(upload) as files:
        return list(files)


def indexed_rows(
    upload: Upload, name: str, fallback: str, query: str, offset: int, limit: int
) -> Rows | None:
    """A page of rows found through the file's index, read by offset; None when the file
    has none (not a file of the format, or never imported): then it is read as before."""
    sent = sent_index.indexed(upload, name)
    if sent is None or not upload.stored_path:
        return None
    found = sent_index.find(sent, query, offset, limit)
    spans = [found.header, *(span for _, span in found.rows)]
    try:
        raw = _read(upload, name, spans)
    except FileNotFoundError:
        return None
    text = [sent_index.text(data, fallback) for data in raw]
    text[0] = text[0].lstrip("\ufeff")
    cells = [next(csv.reader(io.StringIO(row, newline="")), []) for row in text]
    searched, started = _searched(upload, name, cells[0], sent.row_terms)
    return Rows(
        header=cells[0],
        rows=[(line, row) for (line, _), row in zip(found.rows, cells[1:], strict=True)],
        matched=found.matched,
        searched=searched,
        started=started,
    )


def _searched(
    upload: Upload, name: str, header: list[str], row_terms: bool
) -> tuple[list[str], list[str]]:
    """The header names of the columns the index searched, and of those it matched from
    their start only, for the page to say so."""
    try:
        spec = get_format(upload.district.format, upload.district.slug)
    except ValueError:
        return [], []
    claimed = spec.claim(name).name
    file_spec = spec.file(claimed) if claimed else None
    if file_spec is None:
        return [], []
    anywhere, start = sent_index.searched_in(header, file_spec)
    if row_terms:  # an index built before own IDs were kept apart: found in any part
        anywhere, start = sorted(anywhere + start), []
    return [header[i] for i in anywhere], [header[i] for i in start]


def _read(upload: Upload, name: str, spans: list[tuple[int, int]]) -> list[bytes]:
    """The spans of one file of an upload: by ranged reads of a loose file; a zip's member
    is decompressed up to the last of them."""
    if name == upload.filename:
        return read_spans(upload, spans)
    with members(upload) as files:
        if name not in files:
            raise FileNotFoundError(name)
        read = {}
        at = 0
        with files[name].open() as stream:  # not seekable: read forward
            for start, end in sorted(set(spans)):
                while at < start and (skipped := stream.read(min(start - at, 1 << 20))):
                    at += len(skipped)
                read[(start, end)] = stream.read(end - start)
                at = end
    return [read[span] for span in spans]
