"""Property tests of the front end (zip, decode, CSV): whatever the bytes, the only way out is a
Failure carrying a finding, memory stays bounded, and no row that can be read is lost."""

import io
import tracemalloc
import zipfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.ingest import read
from rosterdrop.ingest.columns import LINE
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.read import Piece, read_table
from rosterdrop.ingest.unpack import Limits, unpack

HEADER = "a,b,c\n"
# The characters that make CSV hard: quotes, delimiters, both line ends, NUL, non-ASCII, Ctrl-Z.
TRICKY = st.text(alphabet='xy,"\r\n\x00é\x1a ', max_size=400)
FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _read_all(data: bytes, fallback: str = "cp1252", chunk: int = 0) -> pl.DataFrame | None:
    """Decode and read `data`; None when a Failure (a finding) refused it."""
    try:
        decoded = decode(io.BytesIO(data), "users.csv", fallback)
        chunks = decoded.chunks
        if chunk:
            chunks = (c[i : i + chunk] for c in chunks for i in range(0, len(c), chunk))
        table = read_table("users.csv", chunks)
        frames = list(table.batches)
    except Failure as failure:
        assert failure.finding.code and failure.finding.message
        return None
    for finding in decoded.findings + table.findings:
        assert finding.file == "users.csv" and finding.code and finding.message
    return pl.concat(frames) if frames else pl.DataFrame(schema={LINE: pl.UInt32})


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["cp1252", ""]))
def test_any_bytes_are_read_or_refused_with_a_finding(data, fallback):
    _read_all(data, fallback)


@FUZZ
@given(TRICKY, st.sampled_from([0, 1, 5, 64]))
def test_every_line_that_is_a_row_on_its_own_is_read_at_its_line(text, chunk):
    """A line with no quote or CR and the header's width is a row at its exact line, whatever
    the lines around it hold (a stray quote costs only its own line), in any chunking."""
    frame = _read_all((HEADER + text).encode(), chunk=chunk)
    if frame is None:
        return
    lines = frame[LINE].to_list()
    assert lines == sorted(set(lines))
    rows = {r[-1]: r[:-1] for r in frame.rows()}
    for number, line in enumerate((HEADER + text).split("\n"), start=1):
        plain = line.removesuffix("\r")
        if number > 1 and '"' not in plain and "\r" not in plain and plain.count(",") == 2:
            assert rows.get(number) == tuple(plain.split(",")), (number, line)


@FUZZ
@given(TRICKY)
def test_polars_and_the_csv_module_read_a_piece_alike(text):
    """Where the fast path takes a piece, the csv module gives the same rows and no finding."""
    data = (text + "\n").encode()
    piece = Piece(data, 2, data.count(b"\n"))
    header = ["a", "b", "c"]
    fast = read.parse_fast(piece, header, ord(","))
    if fast is None:
        return
    table = read.Table("users.csv", header, iter(()))
    strict = read.StrictReader(table, ",", "").read(piece)
    assert strict.equals(fast) and table.findings == []


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


GOOD_ZIP = _zip({"users.csv": (HEADER + "x,y,z\n" * 200).encode(), "orgs.csv": b"a,b\n1,2\n"})
LIMITS = Limits(max_members=16, max_total_bytes=1 << 20, max_ratio=200)


def _unpack_and_read(path: Path) -> None:
    try:
        for member in unpack([path], LIMITS):
            with member.open() as stream:
                _read_all(stream.read())
    except Failure as failure:
        assert failure.finding.code and failure.finding.message


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes_named_zip_are_refused_with_a_finding(tmp_path, data):
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    _unpack_and_read(path)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(GOOD_ZIP) - 1), st.integers(0, 255)), max_size=8),
    st.integers(1, len(GOOD_ZIP)),
)
def test_a_damaged_zip_is_refused_with_a_finding(tmp_path, changes, length):
    """Bytes overwritten anywhere (headers, sizes, CRCs, deflated data) and the zip cut."""
    data = bytearray(GOOD_ZIP)
    for at, value in changes:
        data[at] = value
    path = tmp_path / "upload.zip"
    path.write_bytes(bytes(data[:length]))
    _unpack_and_read(path)


@pytest.mark.parametrize(
    "body",
    [
        b'"' * (1 << 20),  # a field of quotes
        b"\r" * (1 << 20),  # bare CRs (an old-Mac file of empty lines)
        b'x,"' + b"\n" * (1 << 17),  # a quote left open over many lines
        b'"a"b,' * (1 << 18),  # text after closing quotes, over and over
        bytes(range(128, 256)) * (1 << 13),  # not UTF-8, not cp1252
    ],
    ids=["quotes", "CRs", "open quote", "after quotes", "high bytes"],
)
def test_memory_stays_bounded(body):
    """A megabyte of the worst of each kind: the Python heap's peak stays a small multiple
    of the input (polars' own buffers are bounded by the same pieces)."""
    data = HEADER.encode() + body
    tracemalloc.start()
    try:
        _read_all(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(data) + (16 << 20), peak
