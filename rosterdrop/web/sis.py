"""The files as the district sent them: members of an upload and their rows with physical
line numbers, read with the pipeline's own unpack and decode stages (no extraction to disk)."""

import csv
from collections.abc import Iterator
from dataclasses import dataclass

from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import stored_file
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.pipeline import limits
from rosterdrop.ingest.unpack import Member, is_zip, unpack


@dataclass
class Rows:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (first physical line, cells)
    matched: int  # rows matching the search, including those past the page
    error: str = ""


def members(upload: Upload) -> dict[str, Member]:
    """The CSV files of an upload by name: a zip's members, or the file itself."""
    path = stored_file(upload)
    if not path.exists():
        return {}
    if is_zip(path):
        try:
            return {m.name: m for m in unpack([path], limits())}
        except Failure:
            return {}
    return {upload.filename: Member(upload.filename, upload.size, lambda: path.open("rb"), "")}


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace") + "\n"
    if rest:
        yield rest.decode("utf-8", "replace")


def _records(member: Member, fallback: str) -> Iterator[tuple[int, list[str]]]:
    with member.open() as stream:
        reader = csv.reader(_lines(decode(stream, member.name, fallback).chunks))
        start = 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def read_rows(
    member: Member, fallback: str, query: str = "", offset: int = 0, limit: int = 100
) -> Rows:
    """One page of rows (after the header) containing `query`, case-insensitive."""
    result = Rows(header=[], rows=[], matched=0)
    needle = query.casefold()
    try:
        for line, row in _records(member, fallback):
            if line == 1:
                result.header = row
                continue
            if needle and not any(needle in cell.casefold() for cell in row):
                continue
            if offset <= result.matched < offset + limit:
                result.rows.append((line, row))
            result.matched += 1
    except (Failure, csv.Error, UnicodeError) as exc:
        finding = getattr(exc, "finding", None)
        result.error = finding.message if finding else f"The file cannot be read further: {exc}"
    return result


def rows_at(member: Member, fallback: str, lines: set[int]) -> dict[int, dict[str, str]]:
    """The rows starting on `lines`, as {column: value}, to explain why they were skipped."""
    found: dict[int, dict[str, str]] = {}
    header: list[str] = []
    try:
        for line, row in _records(member, fallback):
            if line == 1:
                header = row
            elif line in lines:
                found[line] = dict(zip(header, row, strict=False))
                if len(found) == len(lines):
                    break
    except (Failure, csv.Error, UnicodeError):
        pass
    return found
