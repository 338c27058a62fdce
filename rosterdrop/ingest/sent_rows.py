"""The rows of a file as the district sent it, with their physical line numbers, read with
the pipeline's own decode stage: a page of the SIS data, and the rows issues are on."""

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field

from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.unpack import Member


@dataclass
class Rows:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (first physical line, cells)
    matched: int  # rows matching the search, including those past the page
    error: str = ""
    # The columns a search looked in (an index's: ID and name cells); none: every cell.
    searched: list[str] = field(default_factory=list, compare=False)
    # Those it matched whole or from their start only (a row's own ID in enrollments.csv).
    started: list[str] = field(default_factory=list, compare=False)


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


def rows_at(member: Member, fallback: str, lines: set[int]) -> tuple[list[str], dict]:
    """The header, and the cells of the rows starting on `lines` ({line: cells}): read up to
    the last of them only."""
    found: dict[int, list[str]] = {}
    header: list[str] = []
    try:
        for line, row in _records(member, fallback):
            if line == 1:
                header = row
            elif line in lines:
                found[line] = row
                if len(found) == len(lines):
                    break
    except (Failure, csv.Error, UnicodeError):
        pass
    return header, found
