r"""Read: UTF-8 chunks -> batches of rows as strings, each row with its physical line number.

Pieces of a file whose quotes (if any) are plain CSV quoting, that hold no escape character
and whose every line has exactly the header's number of delimiters are parsed by polars (fast);
any other piece goes through the stdlib csv module in strict mode, which reports ragged rows
and broken quotes at their exact lines. Both give the same rows, so the choice is only about
speed. Header = line 1.

A format may escape characters with a backslash (Apple School Manager: `\"`, `\,`, and an
escaped newline inside a value); the escape character is then honoured wherever it appears.
"""

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from rosterdrop.ingest.ahead import ahead
from rosterdrop.ingest.decode import count_byte
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding

LINE = "_line"
QUOTE, NEWLINE, RETURN = ord('"'), ord("\n"), ord("\r")
# A piece is cut at a newline; an unclosed quote or a line longer than this is refused.
MAX_PENDING = 64 << 20
csv.field_size_limit(1 << 20)


@dataclass(frozen=True)
class Piece:
    """Whole lines of a file: their text, the first one's number and how many there are."""

    text: bytes
    line: int
    lines: int


@dataclass
class Table:
    """A file's header and its rows, produced batch by batch."""

    name: str
    header: list[str]
    batches: Iterator[pl.DataFrame] = field(repr=False)
    findings: list[Finding] = field(default_factory=list)


def read_table(
    name: str, chunks: Iterator[bytes], delimiter: str = ",", escapechar: str = ""
) -> Table:
    """`delimiter`: one character, or several candidates: the first found in the header wins.

    `escapechar`: the character that makes the next one literal ("" = none).
    """
    pieces = _pieces(name, _line_endings(chunks), escapechar.encode())
    try:
        first = next(pieces)
    except StopIteration:
        raise Failure(
            Finding(FATAL, "file_empty", f"{name} is empty: it needs at least a header row.", name)
        ) from None
    header_text, _, rest = first.text.partition(b"\n")
    delimiter = next((d for d in delimiter if d.encode() in header_text), delimiter[0])
    header_line = header_text.decode("utf-8").rstrip("\r")
    header = next(csv.reader([header_line], delimiter=delimiter, escapechar=escapechar or None), [])
    header = [h.strip() for h in header]
    if not any(header):
        raise Failure(
            Finding(FATAL, "header_missing", f"{name} has no header row on line 1.", name, 1)
        )
    table = Table(name=name, header=header, batches=iter(()))
    rest_piece = Piece(rest, 2, first.lines - 1)
    table.batches = ahead(_batches(table, delimiter, escapechar, _chain(rest_piece, pieces)))
    return table


def _line_endings(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Turn old-Mac bare CR line endings into LF; CRLF and LF are read as they are."""
    chunks = iter(chunks)
    first = next(chunks, b"")
    if b"\r" in first and b"\n" not in first:
        yield first.replace(b"\r", b"\n")
        for chunk in chunks:
            yield chunk.replace(b"\r", b"\n")
    else:
        yield first
        yield from chunks


def _pieces(name: str, chunks: Iterator[bytes], escape: bytes = b"") -> Iterator[Piece]:
    """Cut the text at newlines outside quotes and escapes."""
    pending = b""
    line = 1
    for chunk in chunks:
        pending += chunk
        plain = _unescaped(pending, escape)
        cut = plain.rfind(b"\n") + 1
        if cut == 0 or b'"' in plain and plain.count(b'"', 0, cut) % 2:
            if len(pending) > MAX_PENDING:
                _refuse_pending(name, pending, line)
            continue
        piece, pending = pending[:cut], pending[cut:]
        lines = count_byte(piece, 10)
        yield Piece(piece, line, lines)
        line += lines
    if pending:
        yield Piece(pending + b"\n", line, count_byte(pending, 10) + 1)


def _unescaped(text: bytes, escape: bytes) -> bytes:
    """`text` with each escape sequence blanked out (same length): escaped quotes and newlines
    must neither open a quoted value nor end a line."""
    if not escape or escape not in text:
        return text
    return re.sub(re.escape(escape) + b".", b"\0\0", text, flags=re.DOTALL)


def _refuse_pending(name: str, pending: bytes, line: int) -> None:
    if b"\n" not in pending:
        raise Failure(
            Finding(FATAL, "line_too_long", f"Line {line} of {name} is too long.", name, line)
        )
    raise Failure(
        Finding(
            FATAL,
            "unterminated_quote",
            f"{name} has a quoted value that never ends (near line {line}); "
            'check for a stray " character.',
            name,
            line,
        )
    )


def _chain(rest: Piece, pieces: Iterator[Piece]) -> Iterator[Piece]:
    if rest.text:
        yield rest
    yield from pieces


def _batches(
    table: Table, delimiter: str, escapechar: str, pieces: Iterator[Piece]
) -> Iterator[pl.DataFrame]:
    sep = ord(delimiter)
    for piece in pieces:
        frame = None
        if not escapechar or escapechar.encode() not in piece.text:
            frame = _fast(piece, table.header, sep)
        if frame is None:
            frame = _strict(piece.text, piece.line, table, delimiter, escapechar)
        if frame.height:
            yield frame


def _fast(piece: Piece, header: list[str], sep: int) -> pl.DataFrame | None:
    """Parse a piece with polars if every line is sure to have exactly the right width and
    any quotes are plain CSV quoting; None sends the piece to the csv module.

    polars refuses a line with too many values; with that, the piece holding exactly
    (width - 1) delimiters per line, outside quotes, means no line has too few either.
    """
    quoted = b'"' in piece.text
    outside = _delimiters_outside_quotes(piece.text, sep) if quoted else count_byte(piece.text, sep)
    if outside != piece.lines * (len(header) - 1):
        return None
    try:
        frame = pl.read_csv(
            piece.text,
            has_header=False,
            new_columns=header,
            schema=dict.fromkeys(header, pl.String),
            quote_char='"' if quoted else None,
            separator=chr(sep),
            empty_string_is_null=False,
        )
    except pl.exceptions.ComputeError:
        return None
    if frame.height != piece.lines:
        return None
    first = piece.line
    return frame.with_columns(
        pl.int_range(first, first + frame.height, dtype=pl.UInt32).alias(LINE)
    )


def _delimiters_outside_quotes(text: bytes, sep: int) -> int:
    """The delimiters outside quoted values, if every quote is plain CSV quoting; else -1.

    Plain quoting: a quoted value starts at the start of a line or right after a delimiter,
    ends right before a delimiter or the line end, holds no line break, and writes a quote
    as "". Anything else (a stray quote, text after the closing quote, a value spanning
    lines) is for the csv module, which reports it at its exact line.
    """
    data = np.frombuffer(text, dtype=np.uint8)
    quotes = np.flatnonzero(data == QUOTE)
    if len(quotes) % 2:
        return -1
    # An escaped "" closes a quoted stretch and opens the next one right after it.
    opens, closes = quotes[0::2], quotes[1::2]
    before = np.where(opens > 0, data[np.maximum(opens - 1, 0)], NEWLINE)
    glued = np.zeros(len(opens), dtype=bool)
    glued[1:] = opens[1:] == closes[:-1] + 1
    after_at = np.minimum(closes + 1, len(data) - 1)
    after = np.where(closes + 1 < len(data), data[after_at], NEWLINE)
    glued_after = np.zeros(len(closes), dtype=bool)
    glued_after[:-1] = glued[1:]
    if not (
        np.all((before == sep) | (before == NEWLINE) | glued)
        and np.all((after == sep) | (after == NEWLINE) | (after == RETURN) | glued_after)
    ):
        return -1
    depth = np.zeros(len(data) + 1, dtype=np.int8)
    depth[opens] = 1
    depth[closes] = -1
    inside = np.cumsum(depth[:-1], dtype=np.int8).view(bool)
    if np.count_nonzero(inside & (data == NEWLINE)):
        return -1
    return int(np.count_nonzero((data == sep) & ~inside))


def _strict(
    piece: bytes, line: int, table: Table, delimiter: str, escapechar: str = ""
) -> pl.DataFrame:
    """Parse with the stdlib csv module, reporting each broken row at its physical line."""
    width = len(table.header)
    name = table.name
    reader = csv.reader(
        io.StringIO(piece.decode("utf-8"), newline=""),
        delimiter=delimiter,
        escapechar=escapechar or None,
        strict=True,
    )
    rows: list[list[str]] = []
    lines: list[int] = []
    while True:
        start = line + reader.line_num
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise Failure(
                    Finding(
                        FATAL,
                        "unterminated_quote",
                        f"{name} has a quoted value starting on line {start} that never ends; "
                        'check for a stray " character.',
                        name,
                        start,
                    )
                ) from None
            table.findings.append(
                Finding(
                    ERROR,
                    "csv_syntax",
                    f"Line {start} is not valid CSV ({exc}); the row was skipped. Values "
                    'containing quotes must be quoted, with each " written as "".',
                    name,
                    start,
                )
            )
            continue
        if not row:
            continue  # a blank line
        if len(row) != width:
            if len(row) > width and not any(v.strip() for v in row[width:]):
                table.findings.append(
                    Finding(
                        WARNING,
                        "row_trailing_delimiters",
                        f"Line {start} has {len(row) - width} empty value(s) beyond the last "
                        "column; they were ignored.",
                        name,
                        start,
                    )
                )
                row = row[:width]
            else:
                table.findings.append(
                    Finding(
                        ERROR,
                        "row_width",
                        f"Line {start} has {len(row)} values but the header has {width} "
                        "columns; the row was skipped. Check for a missing or extra delimiter.",
                        name,
                        start,
                        value=delimiter.join(row)[:200],
                    )
                )
                continue
        rows.append(row)
        lines.append(start)
    frame = pl.DataFrame(rows, schema=dict.fromkeys(table.header, pl.String), orient="row")
    return frame.with_columns(pl.Series(LINE, lines, dtype=pl.UInt32))
