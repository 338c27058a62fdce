r"""Read: UTF-8 text -> batches of rows as strings, each row with its physical line number.

A line ends at LF (CRLF counts as one line end; decode gave an old-Mac file LF line ends); a
lone CR elsewhere is a character of its line, to polars and to the csv module alike. Header =
line 1.

Pieces of a file whose quotes (if any) are plain CSV quoting, that hold no escape character
and whose every line has exactly the header's number of delimiters are parsed by polars (fast);
any other piece goes through the stdlib csv module in strict mode, fed one physical line at a
time, which reports ragged rows and broken quotes at their exact lines. Both give the same
rows, so the choice is only about speed.

Where the csv module cannot tell where a row ends (a quote that opens a value and never
closes, text after a closing quote, a value over the field limit), only the line that row
starts on is lost: it is reported (a code in findings.UNREADABLE) and reading starts again at
the next physical line. A value spanning lines is kept only when it makes a row of the
header's width and none of the lines it spans reads as a row of its own; otherwise its opening
quote is taken as stray. Where that cannot be sound the file is refused: a broken header, a
last line cut off without a line break (`file_truncated`), more than MAX_UNREADABLE broken rows.

A format may escape characters with a backslash (Apple School Manager: `\"`, `\,`, and an
escaped newline inside a value); the escape character is then honoured wherever it appears.
"""

import csv
import dataclasses
import re
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from operator import length_hint
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from rosterdrop import polars_csv
from rosterdrop.ingest.ahead import ahead
from rosterdrop.ingest.columns import KNOWN, LINE, LINECHECK, LINEHASH
from rosterdrop.ingest.decode import MAX_LINE, count_byte, line_too_long
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding
from rosterdrop.timing import timed

QUOTE, NEWLINE, RETURN = ord('"'), ord("\n"), ord("\r")
FIELD_LIMIT = 1 << 20
csv.field_size_limit(FIELD_LIMIT)
# A row still open at the end of a piece (a quoted value running on) is carried into the next
# piece up to this size; beyond it, its first line is taken as broken.
MAX_CARRY = 8 << 20
# More broken rows than this and the file is refused: its dialect is not what it seems.
MAX_UNREADABLE = 1000
# Stand-ins for a lone CR while the csv module reads a line (it would end the row there):
# Unicode noncharacters, the first one the piece does not hold.
_CR_STAND_INS = [chr(c) for c in range(0xFDD0, 0xFDF0)]
_LONE_CR = re.compile("\r(?!\n)")
# What is left of a last line cut by an old exporter's end-of-file mark (Ctrl-Z) or blanks.
_NOTHING = " \t\r\x1a"
# The seeds of a line's two hashes (LINEHASH, LINECHECK): fixed, they are kept from one read
# to the next.
LINE_SEEDS = (20261206, 61202026)


@dataclass(frozen=True)
class Piece:
    """Whole lines of a file: their text, the first one's number and how many there are.

    `final`: the file's last piece; `cut`: the file did not end with a line break.
    """

    text: bytes
    line: int
    lines: int
    final: bool = False
    cut: bool = False
    # Where each line starts, and the last ends (`lines` + 1 offsets), if found as the piece
    # was cut (a table whose lines are hashed: `_lines` needs them, and they count the lines).
    ends: np.ndarray | None = field(default=None, compare=False, repr=False)


class KnownLines(Protocol):
    """The lines the last read of a file kept (ingest/lines.py)."""

    def find(self, hashes: pl.DataFrame) -> pl.Series:
        """For each line (LINEHASH, LINECHECK), where it is among them (KNOWN), or null."""
        ...


@dataclass(frozen=True)
class FoundLines:
    """A piece read line by line whose lines were found, all or some, among those the last
    read kept: the found ones as their line number, hashes and KNOWN (`found`), and the
    others' rows parsed, with their line numbers and hashes (`parsed`; None: none), each in
    line order. Two frames, not one: the found lines' columns filled with nulls, sorted in
    line order with the parsed rows and split again by the reader cost ~10 ms per piece of
    87k lines (every piece of a 1% change has lines read anew)."""

    found: pl.DataFrame
    parsed: pl.DataFrame | None = None


# A batch of a file's rows: parsed, or a piece's found lines and the others parsed.
Batch = pl.DataFrame | FoundLines


@dataclass
class Table:
    """A file's header and its rows, produced batch by batch.

    Set before the batches are first asked for (their thread starts then): `hash_lines`, for
    each line of a plain piece its hashes (LINEHASH, LINECHECK) beside its row; `known`, the
    lines the last read kept: those come as FoundLines, not parsed (an incremental read,
    ingest/lines.py).
    """

    name: str
    header: list[str]
    batches: Generator[Batch, None, None] = field(repr=False)
    findings: list[Finding] = field(default_factory=list)
    delimiter: str = ","
    hash_lines: bool = False
    known: KnownLines | None = None


def read_table(
    name: str, chunks: Iterator[bytes], delimiter: str = ",", escapechar: str = ""
) -> Table:
    """`delimiter`: one character, or several candidates: the first found in the header wins.

    `escapechar`: the character that makes the next one literal ("" = none).
    """
    wanted = _EndsWanted()
    pieces = _pieces(name, chunks, escapechar.encode(), wanted)
    first = next(pieces)
    if not first.text:
        raise Failure(
            Finding(FATAL, "file_empty", f"{name} is empty: it needs at least a header row.", name)
        )
    header_text, _, rest = first.text.partition(b"\n")
    delimiter = next((d for d in delimiter if d.encode() in header_text), delimiter[0])
    header = _header(name, header_text.decode("utf-8"), delimiter, escapechar)
    table = Table(name=name, header=header, batches=_no_batches(), delimiter=delimiter)
    wanted.table = table
    rest_piece = Piece(rest, 2, first.lines - 1, first.final, first.cut)
    table.batches = ahead(_batches(table, delimiter, escapechar, _chain(rest_piece, pieces)))
    return table


@dataclass
class _EndsWanted:
    """Whether the pieces of a table being read find their line ends as they are cut
    (`_pieces`' `ends`): its `hash_lines`, once the table is made (`table`; its header is
    the first piece's, cut before it: that one's ends are never wanted)."""

    table: Table | None = None

    def __call__(self) -> bool:
        return self.table is not None and self.table.hash_lines


def frames(table: Table) -> Iterator[pl.DataFrame]:
    """The batches of a table that knows no lines (no `known`): every one parsed."""
    for batch in table.batches:
        assert isinstance(batch, pl.DataFrame)  # FoundLines only where `known` finds some
        yield batch


def _header(name: str, text: str, delimiter: str, escapechar: str) -> list[str]:
    """Line 1's names; a header the csv module cannot read as one line is refused."""
    text = text.removesuffix("\r")

    def refuse(what: str) -> Failure:
        return Failure(
            Finding(
                FATAL,
                "header_invalid",
                f"Line 1 of {name}, the header, {what}; nothing was read. Save the file again "
                "from the program that made it, with one header row of column names.",
                name,
                1,
            )
        )

    if "\r" in text:
        raise refuse("holds a carriage return (CR) character inside it")
    try:
        row = next(
            csv.reader([text], delimiter=delimiter, escapechar=escapechar or None, strict=True), []
        )
    except csv.Error as exc:
        raise refuse(f"is not valid CSV ({_plain(exc)})") from None
    header = [h.strip() for h in row]
    if not any(header):
        raise Failure(
            Finding(FATAL, "header_missing", f"{name} has no header row on line 1.", name, 1)
        )
    return header


def _no_batches() -> Generator[Batch, None, None]:
    """A table's batches until its own are made (they need the table)."""
    yield from ()


def _pieces(
    name: str,
    chunks: Iterator[bytes],
    escape: bytes = b"",
    ends: Callable[[], bool] = lambda: False,
) -> Iterator[Piece]:
    """Cut the text at line ends, where the quotes before are balanced if there is such a line
    end (a value spanning lines then stays in one piece), else at the last one. `ends`: asked
    for each piece, whether its line ends are found (`Piece.ends`) instead of only counted:
    one pass over its bytes for both, not two (`_lines`)."""
    pending = b""
    line = 1
    for chunk in chunks:
        pending += chunk
        plain = _unescaped(pending, escape)
        cut = plain.rfind(b"\n") + 1
        if cut == 0:
            if len(pending) > MAX_LINE:
                raise Failure(line_too_long(name, line))
            continue
        if b'"' in plain and plain.count(b'"', 0, cut) % 2:
            cut = _last_balanced_line_end(plain, cut) or cut
        piece, pending = pending[:cut], pending[cut:]
        made = _cut(piece, line, ends())
        yield made
        line += made.lines
    cut = bool(pending) and not pending.endswith(b"\n")
    text = pending + b"\n" if cut else pending
    yield dataclasses.replace(_cut(text, line, ends()), final=True, cut=cut)


def _cut(text: bytes, line: int, ends: bool) -> Piece:
    """A piece of whole lines, its lines counted, or found (`ends`)."""
    if not ends:
        return Piece(text, line, count_byte(text, NEWLINE))
    offsets = _line_starts(text)
    return Piece(text, line, len(offsets) - 1, ends=offsets)


def _line_starts(text: bytes) -> np.ndarray:
    """Where each line of `text` starts, and where the last ends (one past each LF)."""
    at = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == NEWLINE)
    offsets = np.empty(len(at) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = at + 1
    return offsets


def _last_balanced_line_end(plain: bytes, cut: int) -> int:
    """The end of the last line before `cut` after which the quotes are balanced (0: none)."""
    data = np.frombuffer(plain, dtype=np.uint8, count=cut)
    odd = np.logical_xor.accumulate(data == QUOTE)
    ends = np.flatnonzero((data == NEWLINE) & ~odd)
    return int(ends[-1]) + 1 if len(ends) else 0


def _unescaped(text: bytes, escape: bytes) -> bytes:
    """`text` with each escape sequence blanked out (same length): escaped quotes and newlines
    must neither open a quoted value nor end a line."""
    if not escape or escape not in text:
        return text
    return re.sub(re.escape(escape) + b".", b"\0\0", text, flags=re.DOTALL)


def _chain(rest: Piece, pieces: Iterator[Piece]) -> Iterator[Piece]:
    if rest.text or rest.final:
        yield rest
    yield from pieces


def _batches(
    table: Table, delimiter: str, escapechar: str, pieces: Iterator[Piece]
) -> Iterator[Batch]:
    sep = ord(delimiter)
    strict = StrictReader(table, delimiter, escapechar)
    for piece in pieces:
        if not piece.text and not strict.carry:
            continue
        frame: Batch | None = None
        if not strict.carry and not (escapechar and escapechar.encode() in piece.text):
            if table.hash_lines:
                frame = parse_lines(piece, table.header, sep, table.known)
            else:
                frame = parse_fast(piece, table.header, sep)
        if frame is None:
            frame = strict.read(piece)
        if isinstance(frame, FoundLines) or frame.height:
            yield frame


def _plain_piece(piece: Piece, header: list[str], sep: int) -> bool:
    """Whether every line of the piece may have exactly the right width, with any quotes plain
    CSV quoting and no CR that polars and the csv module read apart (then polars parses it).

    polars refuses a line with too many values; with that, the piece holding exactly
    (width - 1) delimiters per line, outside quotes, means no line has too few either.
    """
    if b"\r" in piece.text and _cr_before_delimiter(piece.text, sep):
        return False
    quoted = b'"' in piece.text
    outside = delimiters_outside_quotes(piece.text, sep) if quoted else count_byte(piece.text, sep)
    return outside == piece.lines * (len(header) - 1)


@timed("read (polars)", batch=True)
def parse_fast(piece: Piece, header: list[str], sep: int) -> pl.DataFrame | None:
    """Parse a piece with polars if every line is sure to have exactly the right width and
    any quotes are plain CSV quoting (`_plain_piece`); None sends the piece to the csv module."""
    if not _plain_piece(piece, header, sep):
        return None
    quoted = b'"' in piece.text
    try:
        frame = polars_csv.read_csv(
            piece.text,
            has_header=False,
            new_columns=header,
            schema=dict.fromkeys(header, pl.String),
            quote_char='"' if quoted else None,
            separator=chr(sep),
            empty_string_is_null=False,
        )
    except pl.exceptions.PolarsError:  # a line too wide (the first: a SchemaError)
        return None
    if frame.height != piece.lines:
        return None
    # The csv module refuses a value over its field limit: so must this path.
    if len(piece.text) > FIELD_LIMIT and _longest(frame) > FIELD_LIMIT:
        return None
    first = piece.line
    return frame.with_columns(
        pl.int_range(first, first + frame.height, dtype=pl.UInt32).alias(LINE)
    )


@timed("read (lines)", batch=True)
def parse_lines(
    piece: Piece, header: list[str], sep: int, known: KnownLines | None
) -> Batch | None:
    """`parse_fast` line by line: each row with its line's hashes; the lines `known` names are
    not parsed (FoundLines). In a plain piece (`_plain_piece`, header width 2 or more: no blank
    lines) a line is a row, read the same wherever it is.

    Only the lines read anew are asked whether they are plain, not the whole piece (its
    delimiters counted, its quotes placed): a line found is the bytes of a row a plain piece
    held (kept lines are rows that `parse_fast` read), with its line end, so it is a plain row
    of the header's width wherever it is, its quotes balanced. With the lines read anew plain
    too, the piece is; if they are not (a value spanning lines, a row too wide or too
    narrow), the whole piece goes to `parse_fast` as before, then to the csv module."""
    if len(header) < 2:
        return parse_fast(piece, header, sep)
    cut = _lines(piece)
    if cut is None:
        return None
    lines, ends = cut
    hashes = pl.DataFrame(
        {
            LINE: pl.int_range(piece.line, piece.line + piece.lines, dtype=pl.UInt32, eager=True),
            LINEHASH: lines.hash(LINE_SEEDS[0]),
            LINECHECK: lines.hash(LINE_SEEDS[1]),
        }
    )
    found = known.find(hashes) if known is not None else None
    if found is None or not (hit := found.is_not_null()).any():
        return _hashed(parse_fast(piece, header, sep), hashes)
    unknown = np.flatnonzero(~hit.to_numpy())
    taken = hashes.filter(hit).with_columns(found.filter(hit).alias(KNOWN))
    if not len(unknown):  # the usual nightly piece: nothing to parse
        return FoundLines(taken)
    starts, stops = ends[unknown].tolist(), ends[unknown + 1].tolist()
    text = b"".join(piece.text[a:b] for a, b in zip(starts, stops, strict=True))
    frame = parse_fast(Piece(text, 0, len(unknown)), header, sep)
    if frame is None:  # not parsed apart from its piece: the whole piece is read
        return _hashed(parse_fast(piece, header, sep), hashes)
    return FoundLines(taken, frame.drop(LINE).hstack(hashes[unknown]))


def _lines(piece: Piece) -> tuple[pl.Series, np.ndarray] | None:
    """The piece's lines, to hash, as its bytes cut after each LF (each line with its LF, and
    its CR if it has one), and where each starts (and the last ends): numpy finds the LFs. A
    one-column polars read of the lines, as before (lines.HASHING 1), cost ~2.5 times the CPU
    (`large`'s 358 MB of enrollments: 0.64 against 0.25 s). None: not one line per row."""
    offsets = piece.ends if piece.ends is not None else _line_starts(piece.text)
    if len(offsets) - 1 != piece.lines or offsets[-1] != len(piece.text):
        return None
    text = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), piece.lines, [None, pa.py_buffer(offsets), pa.py_buffer(piece.text)]
    )
    return pl.Series(text), offsets


def _hashed(frame: pl.DataFrame | None, hashes: pl.DataFrame) -> pl.DataFrame | None:
    """A whole piece's rows with their lines' hashes."""
    return None if frame is None else frame.with_columns(hashes[LINEHASH], hashes[LINECHECK])


def _cr_before_delimiter(text: bytes, sep: int) -> bool:
    """polars drops a CR that ends an unquoted value, the csv module keeps it (as it keeps a
    lone CR anywhere): such a piece is for the csv module. CRLF files pay one pass of numpy."""
    data = np.frombuffer(text, dtype=np.uint8)
    returns = np.flatnonzero(data[:-1] == RETURN)
    return bool(np.count_nonzero(data[returns + 1] == sep))


def _longest(frame: pl.DataFrame) -> int:
    return frame.select(pl.all().str.len_bytes().max()).max_horizontal().item() or 0


def delimiters_outside_quotes(text: bytes, sep: int) -> int:
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
    # A CR after a closing quote is a line end only as the first half of CRLF.
    then = data[np.minimum(closes + 2, len(data) - 1)]
    crlf = (after == RETURN) & (then == NEWLINE) & (closes + 2 < len(data))
    glued_after = np.zeros(len(closes), dtype=bool)
    glued_after[:-1] = glued[1:]
    if not (
        np.all((before == sep) | (before == NEWLINE) | glued)
        and np.all((after == sep) | (after == NEWLINE) | crlf | glued_after)
    ):
        return -1
    # Counted per quoted stretch [open, close) among the places of the line ends and of the
    # delimiters, not marked byte by byte (`large`'s 17.7 MB of classes.csv: 0.04 s CPU
    # against 0.08-0.19 s).
    if _within(np.flatnonzero(data == NEWLINE), opens, closes):
        return -1
    seps = np.flatnonzero(data == sep)
    return len(seps) - _within(seps, opens, closes)


def _within(places: np.ndarray, opens: np.ndarray, closes: np.ndarray) -> int:
    """How many of `places` (sorted) are in the stretches [opens[i], closes[i])."""
    inside = np.searchsorted(places, closes) - np.searchsorted(places, opens)
    return int(inside.sum())


def _plain(exc: csv.Error) -> str:
    """The csv module's complaint in words a data manager reads."""
    text = str(exc)
    if "expected after" in text:
        return "there is text right after the closing quote of a value"
    if "unexpected end of data" in text:
        return "a quoted value is never closed"
    return text


class StrictReader:
    """The csv module in strict mode over whole physical lines, carrying a row still open at
    the end of one piece into the next, and starting again at the line after a broken row."""

    def __init__(self, table: Table, delimiter: str, escapechar: str):
        self.table, self.width = table, len(table.header)
        self.options: dict[str, Any] = {
            "delimiter": delimiter,
            "escapechar": escapechar or None,
            "strict": True,
        }
        self.escapechar = escapechar
        self.carry: list[str] = []  # the lines of a row still open, from the last piece
        self.carry_line = 0
        self.unreadable = 0

    @timed("read (csv module)", batch=True)
    def read(self, piece: Piece) -> pl.DataFrame:
        text = piece.text.decode("utf-8")
        stand_in = ""
        if "\r" in text and _LONE_CR.search(text):
            # None free: the csv module reports such a line as broken.
            stand_in = next((c for c in _CR_STAND_INS if c not in text), "")
            if stand_in:
                text = _LONE_CR.sub(stand_in, text)
        lines = _split(text, self.escapechar)
        first = piece.line
        if self.carry:
            lines, first = self.carry + lines, self.carry_line
            self.carry = []
        numbers = _numbers(lines, first, self.escapechar)
        rows: list[list[str]] = []
        at: list[int] = []
        source, reader = self._reader(lines, 0)
        pos = 0
        while pos < len(lines):
            start = pos
            try:
                row = next(reader, None)
            except csv.Error as exc:
                end = len(lines) - length_hint(source)
                open_at_end = "unexpected end of data" in str(exc)
                if open_at_end and not piece.final and sum(map(len, lines[start:])) <= MAX_CARRY:
                    self.carry, self.carry_line = lines[start:], numbers[start]
                    break
                if open_at_end and piece.cut and end >= len(lines) and start == len(lines) - 1:
                    raise Failure(self._truncated(numbers[start])) from None
                self._broken(numbers, start, end, exc)
                pos = start + 1
                source, reader = self._reader(lines, pos)
                continue
            if row is None:
                break
            pos = len(lines) - length_hint(source)
            if not row:
                continue  # a blank line
            line = numbers[start]
            if pos - start > 1 and not self._spans_soundly(row, lines, start, pos):
                self._broken(numbers, start, pos, None, len(row))
                pos = start + 1
                source, reader = self._reader(lines, pos)
                continue
            last = piece.cut and pos >= len(lines)
            if last and len(row) < self.width:
                if not "".join(row).strip(_NOTHING):
                    continue  # an end-of-file mark, not a row
                raise Failure(self._truncated(line))
            row = self._fitted(row, line)
            if row is not None:
                rows.append(row)
                at.append(line)
        frame = pl.DataFrame(rows, schema=dict.fromkeys(self.table.header, pl.String), orient="row")
        if stand_in:
            frame = frame.with_columns(pl.all().str.replace_all(stand_in, "\r", literal=True))
        return frame.with_columns(pl.Series(LINE, at, dtype=pl.UInt32))

    def _reader(self, lines: list[str], pos: int) -> tuple[Iterator[str], Iterator[list[str]]]:
        """A csv reader over `lines` from `pos` on, and its source, whose place says how many
        lines the reader took (a list iterator starts at `pos` in O(1): its pickle state)."""
        source = iter(lines)
        source.__setstate__(pos)  # type: ignore[attr-defined]  # a list_iterator's
        return source, csv.reader(source, **self.options)

    def _fits(self, row: list[str]) -> bool:
        return len(row) == self.width or (
            len(row) > self.width and not any(v.strip() for v in row[self.width :])
        )

    def _spans_soundly(self, row: list[str], lines: list[str], start: int, end: int) -> bool:
        """A row over several lines is a value with line breaks only if it fits the header and
        none of the lines after its first is a row of its own (else its first quote is stray)."""
        if not self._fits(row):
            return False
        for line in lines[start + 1 : end]:
            try:
                alone = next(csv.reader([line], **self.options), [])
            except csv.Error:
                continue
            if len(alone) == self.width:
                return False
        return True

    def _fitted(self, row: list[str], line: int) -> list[str] | None:
        """The row cut to the header's width (trailing empty values), or None if it is ragged."""
        name, width = self.table.name, self.width
        if len(row) == width:
            return row
        if self._fits(row):
            self.table.findings.append(
                Finding(
                    WARNING,
                    "row_trailing_delimiters",
                    f"Line {line} has {len(row) - width} empty value(s) beyond the last "
                    "column; they were ignored.",
                    name,
                    line,
                )
            )
            return row[:width]
        self.table.findings.append(
            Finding(
                ERROR,
                "row_width",
                f"Line {line} has {len(row)} values but the header has {width} "
                "columns; the row was skipped. Check for a missing or extra delimiter.",
                name,
                line,
                value=self.options["delimiter"].join(row)[:200],
            )
        )
        return None

    def _broken(
        self, numbers: Sequence[int], start: int, end: int, exc: csv.Error | None, values: int = 0
    ) -> None:
        """Report the row starting at `start` as unreadable: reading goes on at the next line."""
        name, line = self.table.name, numbers[start]
        last = numbers[max(end - 1, start)]
        text = "" if exc is None else str(exc)
        again = f"the line was skipped and reading went on at line {line + 1}"
        stray = (
            'Check that line for a stray " character: a quote inside a value must be written '
            '"" and the whole value put in quotes.'
        )
        if "field larger than field limit" in text and last > line:
            code = "unterminated_quote"
            message = (
                f"Line {line} has a quote that opens a value which runs on past line {last}, "
                f"over {FIELD_LIMIT:,} characters; {again}. {stray}"
            )
        elif "field larger than field limit" in text:
            code = "field_too_large"
            message = (
                f"Line {line} has a value longer than {FIELD_LIMIT:,} characters (often a quote "
                f"that runs on); {again}. {stray}"
            )
        elif exc is None:
            code = "unterminated_quote"
            message = (
                f"Line {line} has a quote that opens a value which closes only on line {last}, "
                + (
                    f"making a row of {values} values for {self.width} columns"
                    if values != self.width
                    else "and the lines in between read as rows of their own"
                )
                + f"; {again}. {stray}"
            )
        elif "unexpected end of data" in text:
            code = "unterminated_quote"
            message = (
                f"Line {line} has a quote that opens a value which never closes; {again}. {stray}"
            )
        elif last > line:
            code = "unterminated_quote"
            message = (
                f"Line {line} has a quote that opens a value which closes only on line {last}, "
                f"where text follows the closing quote; {again}. {stray}"
            )
        else:
            code = "csv_syntax"
            message = f"Line {line} is not valid CSV ({_plain(exc)}); {again}. {stray}"
        self.table.findings.append(Finding(ERROR, code, message, name, line))
        self.unreadable += 1
        if self.unreadable > MAX_UNREADABLE:
            raise Failure(
                Finding(
                    FATAL,
                    "csv_unreadable",
                    f"More than {MAX_UNREADABLE} rows of {name} could not be read as CSV (the "
                    f"last on line {line}); nothing was applied. Check the file's quotes and "
                    "delimiter, or save it again as CSV.",
                    name,
                    line,
                )
            )

    def _truncated(self, line: int) -> Finding:
        return Finding(
            FATAL,
            "file_truncated",
            f"{self.table.name} ends in the middle of a row (line {line} is cut off and the file "
            "has no final line break): the upload looks cut off, so nothing was applied. Send "
            "the whole file again.",
            self.table.name,
            line,
        )


def _split(text: str, escapechar: str) -> list[str]:
    """The text's lines, each with its LF; with an escape character, an escaped line break
    does not end a line."""
    if not escapechar or escapechar not in text:
        parts = text.split("\n")
        return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    blanked = re.sub(re.escape(escapechar) + ".", "\0\0", text, flags=re.DOTALL)
    lines, begin = [], 0
    for end in (m.end() for m in re.finditer("\n", blanked)):
        lines.append(text[begin:end])
        begin = end
    if begin < len(text):
        lines.append(text[begin:])
    return lines


def _numbers(lines: list[str], first: int, escapechar: str) -> Sequence[int]:
    """The physical line each of `lines` starts on."""
    if not escapechar:
        return range(first, first + len(lines))
    counts = np.fromiter((line.count("\n") for line in lines), dtype=np.int64, count=len(lines))
    numbers: list[int] = (first + np.concatenate(([0], np.cumsum(counts)[:-1]))).tolist()
    return numbers
