"""Decode: bytes as sent -> UTF-8 text cut at line ends, its encoding named, never guessed.

A byte order mark decides (UTF-8, UTF-16 LE/BE), and so does the NUL pattern of UTF-16 written
without one (with a warning). Otherwise the file is UTF-8 unless none of it is: a file whose
non-ASCII bytes never make a UTF-8 character is read in the district's fallback encoding (such
as cp1252) if it is valid there, and refused if not. A UTF-8 file with a few bad bytes stays
UTF-8: each line holding one is reported (`utf8_invalid`: line, byte and its place) and handed
on empty, an unreadable line; it is never re-read as cp1252 (`CÃ½rus`). A file that mixes the
two is refused. An old-Mac file (CR line ends, no LF) gets LF line ends: after this stage a
line ends at LF.
"""

import codecs
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding

CHUNK = 16 << 20
HEAD = 4096
# A line longer than this is refused (memory stays bounded).
MAX_LINE = 64 << 20
# More lines with bad bytes than this and the file is refused: it is not UTF-8 with a few slips.
MAX_BAD_LINES = 1000

BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# One well-formed UTF-8 character of two to four bytes (RFC 3629, table 3-7 of Unicode).
UTF8_CHARACTER = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
# A byte that is not UTF-8, as "surrogateescape" decodes it.
_BAD_BYTE = re.compile("[\udc80-\udcff]")


@dataclass
class Decoded:
    """A file's text as UTF-8 byte chunks of whole lines (the last may lack its line break);
    `encoding` is final once the first non-ASCII chunk is out; `findings` grow as it is read."""

    name: str
    chunks: Iterator[bytes] = field(repr=False)
    encoding: str = "utf-8"
    findings: list[Finding] = field(default_factory=list)


def count_byte(data: bytes, byte: int) -> int:
    """How many times `byte` occurs: numpy compares a whole chunk at once, about three times
    faster than bytes.count on this hardware, and every chunk is counted."""
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == byte))


def line_too_long(name: str, line: int) -> Finding:
    return Finding(
        FATAL,
        "line_too_long",
        f"Line {line} of {name} is longer than {MAX_LINE >> 20} MB; nothing was read. A CSV "
        "line this long is not a roster row: check that the file is the right one.",
        name,
        line,
    )


def decode(stream: BinaryIO, name: str, fallback: str = "") -> Decoded:
    head = stream.read(HEAD)
    result = Decoded(name=name, chunks=iter(()))
    for bom, encoding in BOMS:
        if head.startswith(bom):
            result.encoding = encoding
            if encoding == "utf-8-sig":
                lines = _whole_lines(_raw(stream, head[len(bom) :]), name, result)
                result.chunks = _checked(lines, name, fallback, result)
            else:
                result.chunks = _recoded(_raw(stream, head), encoding, name, result)
            return result
    utf16 = _utf16_without_bom(head)
    if utf16:
        result.encoding = utf16
        result.findings.append(
            Finding(
                WARNING,
                "encoding_utf16_no_bom",
                f"{name} is {utf16.upper()} without a byte order mark; it was read as "
                f"{utf16.upper()} (every other byte is NUL). Saving it as UTF-8 avoids the doubt.",
                name,
            )
        )
        result.chunks = _recoded(_raw(stream, head), utf16, name, result)
        return result
    if head.count(0) * 10 > len(head):
        raise Failure(
            Finding(
                FATAL,
                "file_binary",
                f"{name} holds binary data (NUL bytes), not CSV text; nothing was read. Send "
                "the CSV file itself, saved as UTF-8.",
                name,
            )
        )
    result.chunks = _checked(_whole_lines(_raw(stream, head), name, result), name, fallback, result)
    return result


def _raw(stream: BinaryIO, head: bytes) -> Iterator[bytes]:
    data = head + stream.read(CHUNK)
    while data:
        yield data
        data = stream.read(CHUNK)


def _utf16_without_bom(head: bytes) -> str:
    """'utf-16-le' or 'utf-16-be' when the head has the NUL pattern of UTF-16 text that is
    mostly ASCII (as a CSV header is): one byte of each pair NUL, the other hardly ever."""
    pairs = len(head) // 2
    if pairs < 4:
        return ""
    first, second = head[0 : 2 * pairs : 2], head[1 : 2 * pairs : 2]
    for zeros, other, encoding in ((second, first, "utf-16-le"), (first, second, "utf-16-be")):
        if zeros.count(0) * 4 >= pairs * 3 and other.count(0) * 20 <= pairs:
            return encoding
    return ""


def _recoded(chunks: Iterator[bytes], encoding: str, name: str, result: Decoded) -> Iterator[bytes]:
    """UTF-16 text as UTF-8 in whole lines; a byte that is not UTF-16 refuses the file."""

    def utf8() -> Iterator[bytes]:
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            for data in chunks:
                yield decoder.decode(data).encode("utf-8")
            yield decoder.decode(b"", final=True).encode("utf-8")
        except UnicodeDecodeError as exc:
            raise Failure(
                Finding(
                    FATAL,
                    "encoding_invalid",
                    f"{name} is {encoding.upper()} but holds bytes that are not "
                    f"({exc.reason}). Save it again as UTF-8.",
                    file=name,
                )
            ) from None

    for data, _ in _whole_lines(utf8(), name, result):
        yield data


def _whole_lines(
    chunks: Iterator[bytes], name: str, result: Decoded
) -> Iterator[tuple[bytes, int]]:
    """The chunks cut after their last LF (the rest goes with the next one), each with the
    number of its first line. An old-Mac file's CRs (CR and no LF in its first chunk) become
    LFs; a file whose first line ends in CR CR LF (a CRLF file saved again through a text mode
    that adds a CR) gets CRLF line ends, with a warning."""
    chunks = iter(chunks)
    first = next(chunks, b"")
    mac = b"\r" in first and b"\n" not in first
    doubled = first[: first.find(b"\n") + 1].endswith(b"\r\r\n")
    if doubled:
        result.findings.append(
            Finding(
                WARNING,
                "line_ends_doubled",
                f"{name} ends its lines with CR CR LF (a file saved twice through a program that "
                "adds a CR); they were read as line ends.",
                name,
            )
        )
    carry = b""
    line = 1
    for chunk in itertools.chain((first,), chunks):
        if mac:
            chunk = chunk.replace(b"\r", b"\n")
        # The carry (no LF in it) and the chunk up to its last LF, copied once: not joined
        # and then cut again (two copies of every chunk: 0.04-0.09 s CPU more per 360 MB).
        cut = chunk.rfind(b"\n") + 1
        if cut == 0 or carry and len(carry) + chunk.find(b"\n") > MAX_LINE:
            data = carry + chunk
            if len(data) > MAX_LINE:
                raise Failure(line_too_long(name, line))
            carry = data
            continue
        if carry:
            whole = b"".join((carry, memoryview(chunk)[:cut]))
        else:
            whole = chunk if cut == len(chunk) else chunk[:cut]
        carry = chunk[cut:]
        if doubled:
            whole = whole.replace(b"\r\r\n", b"\r\n")
        yield whole, line
        line += count_byte(whole, 10)
    if carry:
        yield carry, line


def _valid_utf8(data: bytes) -> bool:
    """Arrow checks UTF-8 about ten times faster than bytes.decode, and copies nothing."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _checked(
    lines: Iterator[tuple[bytes, int]], name: str, fallback: str, result: Decoded
) -> Iterator[bytes]:
    """UTF-8 passed through once checked; the fallback only for a file with no UTF-8 in it."""
    utf8 = falling_back = False  # neither while all is ASCII
    for data, line in lines:
        if data.isascii():
            yield data
            continue
        if not falling_back:
            if _valid_utf8(data):
                utf8 = True
                yield data
                continue
            if utf8 or UTF8_CHARACTER.search(data):
                utf8 = True
                yield _without_bad_lines(data, line, name, result)
                continue
            if not fallback:
                raise Failure(_not_utf8(data, line, name, "and no fallback encoding is set"))
            falling_back, result.encoding = True, fallback
        elif mixed := UTF8_CHARACTER.search(data):
            at = line + data.count(b"\n", 0, mixed.start())
            raise Failure(
                Finding(
                    FATAL,
                    "encoding_invalid",
                    f"{name} mixes {fallback} and UTF-8: its first lines are not UTF-8, but line "
                    f"{at} is. Save the whole file as UTF-8 and send it again.",
                    name,
                    at,
                )
            )
        try:
            yield data.decode(fallback).encode("utf-8")
        except UnicodeDecodeError as exc:
            bad = line + data.count(b"\n", 0, exc.start)
            raise Failure(
                Finding(
                    FATAL,
                    "encoding_invalid",
                    f"{name} is neither UTF-8 nor {fallback}: byte 0x{data[exc.start]:02X} on "
                    f"line {bad} has no meaning in {fallback}. Save the file as UTF-8 and send "
                    "it again.",
                    name,
                    bad,
                    value=f"0x{data[exc.start]:02X}",
                )
            ) from None


def _not_utf8(data: bytes, line: int, name: str, why: str) -> Finding:
    text = data.decode("utf-8", "surrogateescape")
    at = _BAD_BYTE.search(text)
    start = at.start() if at else 0
    byte = ord(at.group()) - 0xDC00 if at else 0
    bad = line + text.count("\n", 0, start)
    return Finding(
        FATAL,
        "encoding_invalid",
        f"{name} is not UTF-8 (byte 0x{byte:02X} on line {bad}) {why}. Save the file as UTF-8 "
        "and send it again.",
        name,
        bad,
        value=f"0x{byte:02X}",
    )


def _without_bad_lines(data: bytes, line: int, name: str, result: Decoded) -> bytes:
    """UTF-8 text with each line that holds a byte which is not UTF-8 reported and emptied."""
    if not data.endswith(b"\n") and _cut_character(data):
        last = line + data.count(b"\n")
        raise Failure(
            Finding(
                FATAL,
                "file_truncated",
                f"{name} ends in the middle of a character on line {last}, with no final line "
                "break: the upload looks cut off, so nothing was applied. Send the whole file "
                "again.",
                name,
                last,
            )
        )
    text = data.decode("utf-8", "surrogateescape")
    kept: list[str] = []
    done = counted = 0  # text up to `done` is handed on; lines are counted up to `counted`
    for bad in _BAD_BYTE.finditer(text):
        if bad.start() < done:
            continue  # its line is already emptied
        begin = text.rfind("\n", 0, bad.start()) + 1
        end = text.find("\n", bad.start())
        end = len(text) if end < 0 else end
        line += text.count("\n", counted, begin)
        counted = begin
        byte = ord(bad.group()) - 0xDC00
        offset = len(text[begin : bad.start()].encode("utf-8", "surrogateescape")) + 1
        if line == 1:  # without its header, no line of the file can be read
            raise Failure(
                Finding(
                    FATAL,
                    "encoding_invalid",
                    f"Line 1 of {name}, the header, holds the byte 0x{byte:02X} (byte {offset} of "
                    "the line), which is not UTF-8, though the rest of the file is; nothing was "
                    "read. Fix that character, save the file as UTF-8 and send it again.",
                    name,
                    1,
                    value=f"0x{byte:02X}",
                )
            )
        result.findings.append(
            Finding(
                ERROR,
                "utf8_invalid",
                f"Line {line} of {name} holds the byte 0x{byte:02X} (byte {offset} of the line), "
                "which is not UTF-8, though the rest of the file is; the line was skipped. Fix "
                "that character, save the file as UTF-8 and send it again.",
                name,
                line,
                value=f"0x{byte:02X}",
            )
        )
        if len(result.findings) > MAX_BAD_LINES:
            raise Failure(
                Finding(
                    FATAL,
                    "encoding_invalid",
                    f"More than {MAX_BAD_LINES} lines of {name} hold bytes that are not UTF-8 "
                    f"(the last on line {line}); nothing was applied. Save the file as UTF-8 "
                    "and send it again.",
                    name,
                    line,
                )
            )
        kept.append(text[done:begin])
        done = end
    kept.append(text[done:])
    return "".join(kept).encode("utf-8")


def _cut_character(data: bytes) -> bool:
    """Whether `data` ends in the first bytes of a UTF-8 character."""
    for size in (1, 2, 3):
        end = data[-size:]
        if len(end) == size and 0xC2 <= end[0] <= 0xF4:
            try:
                return codecs.getincrementaldecoder("utf-8")().decode(end) == ""
            except UnicodeDecodeError:
                return False
    return False
