"""Reading: plainly quoted pieces go to polars, anything else to the csv module, with the same
rows either way; the csv module still reports broken rows at their lines."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rosterdrop.ingest import columns, read
from rosterdrop.ingest.read import read_table

HEADER = "sourcedId,title,periods\n"
QUOTED = [
    'c1,"Algebra, Block",1\n',  # a delimiter inside quotes
    'c2,"Say ""hi""",2\n',  # escaped quotes
    'c3,"",""\n',  # empty quoted values
    '"c4",Plain,"3,4"\n',  # quoted first and last values
    'c5,"Nguyễn, Ødegård","5"\r\n',  # non-ASCII, CRLF
    'c6,"""",6\n',  # a value that is one quote
]


def _read(text: str) -> tuple[pl.DataFrame, list]:
    table = read_table("classes.csv", iter([text.encode()]))
    frames = list(table.batches)
    return pl.concat(frames) if frames else pl.DataFrame(), table.findings


def _strictly(header: str, body: str) -> tuple[pl.DataFrame, list]:
    """The rows under a header as the csv module reads them (the reader's other path)."""
    data = body.encode()
    table = read.Table("classes.csv", header.strip().split(","), iter(()))
    strict = read.StrictReader(table, ",", "").read(read.Piece(data, 2, data.count(b"\n")))
    return strict, table.findings


def test_plain_quoting_reads_the_same_through_polars_and_the_csv_module():
    data = "".join(QUOTED).encode()
    piece = read.Piece(data, 2, data.count(b"\n"))
    fast = read.parse_fast(piece, HEADER.strip().split(","), ord(","))
    assert fast is not None  # polars takes plain quoting
    strict, findings = _strictly(HEADER, "".join(QUOTED))
    assert fast.equals(strict) and findings == []
    assert fast["title"].to_list() == [
        "Algebra, Block", 'Say "hi"', "", "Plain", "Nguyễn, Ødegård", '"',
    ]  # fmt: skip
    assert fast["periods"].to_list() == ["1", "2", "", "3,4", "5", "6"]
    assert fast["_line"].to_list() == [2, 3, 4, 5, 6, 7]
    # And the whole file, through the public reader, reads the same.
    whole, findings = _read(HEADER + "".join(QUOTED))
    assert whole.equals(fast) and findings == []


@pytest.mark.parametrize(
    "line",
    [
        'c1,ab"c,1\n',  # a quote inside an unquoted value
        'c1,"ab"c,1\n',  # text after the closing quote
        'c1, "ab",1\n',  # a space before the opening quote
        'c1,"a\nb",1\n',  # a value spanning lines
        'c1,"ab,1\n',  # an odd number of quotes
    ],
)
def test_other_quoting_goes_to_the_csv_module(line):
    assert read.delimiters_outside_quotes(line.encode(), ord(",")) == -1


def test_plain_quoting_counts_only_the_delimiters_outside_quotes():
    assert read.delimiters_outside_quotes(b'c1,"a,b,""c""",1\n', ord(",")) == 2


def _outside_byte_by_byte(text: bytes, sep: int) -> int:
    """delimiters_outside_quotes as it was first written: each byte marked inside a quoted
    stretch or not (a cumulative sum), then the line ends inside and the delimiters outside
    counted."""
    data = np.frombuffer(text, dtype=np.uint8)
    quotes = np.flatnonzero(data == read.QUOTE)
    if len(quotes) % 2:
        return -1
    opens, closes = quotes[0::2], quotes[1::2]
    before = np.where(opens > 0, data[np.maximum(opens - 1, 0)], read.NEWLINE)
    glued = np.zeros(len(opens), dtype=bool)
    glued[1:] = opens[1:] == closes[:-1] + 1
    after_at = np.minimum(closes + 1, len(data) - 1)
    after = np.where(closes + 1 < len(data), data[after_at], read.NEWLINE)
    then = data[np.minimum(closes + 2, len(data) - 1)]
    crlf = (after == read.RETURN) & (then == read.NEWLINE) & (closes + 2 < len(data))
    glued_after = np.zeros(len(closes), dtype=bool)
    glued_after[:-1] = glued[1:]
    if not (
        np.all((before == sep) | (before == read.NEWLINE) | glued)
        and np.all((after == sep) | (after == read.NEWLINE) | crlf | glued_after)
    ):
        return -1
    depth = np.zeros(len(data) + 1, dtype=np.int8)
    depth[opens] = 1
    depth[closes] = -1
    inside = np.cumsum(depth[:-1], dtype=np.int8).view(bool)
    if np.count_nonzero(inside & (data == read.NEWLINE)):
        return -1
    return int(np.count_nonzero((data == sep) & ~inside))


@given(st.lists(st.sampled_from(['"', ",", "\n", "a", "\r", '""', ',"', '",']), max_size=60))
def test_delimiters_outside_quotes_counts_as_marking_each_byte(parts):
    """The delimiters and line ends inside quoted stretches are counted from their places (one
    search per stretch), as marking every byte inside or outside counted them."""
    text = "".join(parts).encode()
    assert read.delimiters_outside_quotes(text, ord(",")) == _outside_byte_by_byte(text, ord(","))


def test_a_ragged_row_among_quoted_ones_is_reported_at_its_line():
    text = HEADER + 'c1,"Algebra, Block",1\n' + 'c2,"Geometry",2,extra\n' + 'c3,"Art",3\n'
    frame, findings = _read(text)
    assert frame["sourcedId"].to_list() == ["c1", "c3"]
    [finding] = findings
    assert (finding.code, finding.line) == ("row_width", 3)


# Where the csv module cannot tell where a row ends: only the line it starts on is lost.

WIDE = "id,name,grade\n"
ROWS = [f"u{i},Name {i},{i % 12}\n" for i in range(1, 9)]


def _lines_of(text: str, chunks: int = 0) -> tuple[dict[int, tuple], list]:
    """Rows by line and the findings, the text handed over whole or in `chunks`-byte chunks."""
    data = text.encode()
    parts = [data[i : i + chunks] for i in range(0, len(data), chunks)] if chunks else [data]
    table = read_table("users.csv", iter(parts))
    frames = list(table.batches)
    frame = pl.concat(frames) if frames else pl.DataFrame({LINE: []})
    return {r[-1]: r[:-1] for r in frame.rows()}, [(f.code, f.line) for f in table.findings]


LINE = columns.LINE


@pytest.mark.parametrize("chunks", [0, 7])
@pytest.mark.parametrize(
    "broken, code",
    [
        ('u4,"Bob,4\n', "unterminated_quote"),  # a quote that never closes
        ('u4,"Bob"x,4\n', "csv_syntax"),  # text after the closing quote
        ('u4,"Bob,4\nu5,x,5\nu6,"Smith, J",6\n', "unterminated_quote"),  # closes 2 lines on
        ('u4,"Bob\nu5,x",4\n', "unterminated_quote"),  # closes on the next line, wrong width
    ],
)
def test_a_row_that_cannot_be_read_costs_only_its_first_line(broken, code, chunks):
    text = WIDE + "".join(ROWS[:3]) + broken + "".join(ROWS[4:])
    rows, findings = _lines_of(text, chunks)
    assert findings == [(code, 5)]
    later = text.splitlines()[5:]
    assert [rows[n][0] for n in range(6, 6 + len(later))] == [r.split(",")[0] for r in later]
    assert [rows[n][0] for n in (2, 3, 4)] == ["u1", "u2", "u3"]


def test_a_value_over_lines_is_kept_when_it_makes_one_row_and_no_line_stands_alone():
    rows, findings = _lines_of(WIDE + 'u1,"Ann\nMarie",1\nu2,b,2\n')
    assert rows == {2: ("u1", "Ann\nMarie", "1"), 4: ("u2", "b", "2")} and findings == []
    # The lines a stray quote joined would each be a row: the quote is stray.
    rows, findings = _lines_of(WIDE + 'u1,"Ann,1\nu2,b,2\nu3,c",3\n')
    assert findings == [("unterminated_quote", 2)] and rows[3] == ("u2", "b", "2")


def test_a_row_left_open_at_the_end_of_a_piece_is_read_with_the_next(monkeypatch):
    """Pieces are cut where the quotes before are balanced; where none is, the open row is
    carried into the next piece, and a legitimate value over lines still reads as one."""
    text = WIDE + 'u1,"Ann\nMarie",1\n' + "".join(ROWS[1:])
    for size in (1, 3, 11):
        rows, findings = _lines_of(text, size)
        assert rows[2] == ("u1", "Ann\nMarie", "1") and rows[4][0] == "u2" and findings == []


def test_a_stray_quote_in_a_big_file_loses_no_other_row():
    rows = [f"u{i},Name {i},{i % 12}\n" for i in range(1, 60_001)]
    rows[29_999] = 'u30000,"Name 30000,0\n'
    found, findings = _lines_of(WIDE + "".join(rows))
    assert findings == [("unterminated_quote", 30_001)]
    assert len(found) == 59_999 and 30_001 not in found and found[30_002][0] == "u30001"


@pytest.mark.parametrize(
    "last, line",
    [("u4,Bo", 5), ('u4,"Bob', 5), ("u4,", 5), ('u4,"Bob\nMar', 6), ('u4,"Bob\nMarie', 6)],
)
def test_a_last_line_cut_without_a_line_break_refuses_the_file(last, line):
    from rosterdrop.ingest.findings import Failure

    text = WIDE + "".join(ROWS[:3]) + last
    with pytest.raises(Failure) as refused:
        _lines_of(text)
    finding = refused.value.finding
    assert (finding.code, finding.severity, finding.line) == ("file_truncated", "fatal", line)
    assert "cut off" in finding.message and "again" in finding.message


@pytest.mark.parametrize("end", ["u4,Bob,4", 'u4,"Bob",4', "\x1a", "u4,Bob,4\r"])
def test_a_complete_last_row_without_a_line_break_is_read(end):
    rows, findings = _lines_of(WIDE + "".join(ROWS[:3]) + end)
    assert findings == [] and len(rows) == (3 if end == "\x1a" else 4)


def test_a_lone_cr_is_a_character_of_its_line_on_both_paths():
    text = WIDE + "u1,Bob\rSmith,1\nu2,x,2\n" + 'u3,"A\rB",3\nu4,y,4\n'
    fast, findings = _lines_of(text)
    assert findings == []
    assert fast == {
        2: ("u1", "Bob\rSmith", "1"),
        3: ("u2", "x", "2"),
        4: ("u3", "A\rB", "3"),
        5: ("u4", "y", "4"),
    }
    strict, strict_findings = _strictly(WIDE, text.removeprefix(WIDE))
    assert {r[-1]: r[:-1] for r in strict.rows()} == fast and strict_findings == []


def test_a_lone_cr_in_the_header_is_a_finding():
    from rosterdrop.ingest.findings import Failure

    with pytest.raises(Failure) as refused:
        _lines_of("id,na\rme,grade\nu1,x,1\n")
    assert (refused.value.finding.code, refused.value.finding.line) == ("header_invalid", 1)


def test_a_ten_megabyte_field_of_quotes_is_one_broken_line():
    for quotes in (10 << 20, (10 << 20) + 1):
        rows, findings = _lines_of(WIDE + "u1," + '"' * quotes + ",1\nu2,x,2\n")
        assert findings == [("field_too_large", 2)] and rows == {3: ("u2", "x", "2")}


def test_more_broken_rows_than_the_limit_refuse_the_file(monkeypatch):
    from rosterdrop.ingest.findings import Failure

    monkeypatch.setattr(read, "MAX_UNREADABLE", 3)
    with pytest.raises(Failure) as refused:
        _lines_of(WIDE + 'u1,"a"b,1\n' * 5)
    assert refused.value.finding.code == "csv_unreadable"


def test_a_first_line_too_wide_balanced_by_a_short_one_is_a_finding():
    """The delimiter count of the piece is right, but polars refuses its first line (a
    SchemaError, found by tests/test_fuzz.py): the csv module reads it and reports both."""
    rows, findings = _lines_of(WIDE + "u1,a,b,c,d\nu2\nu3,x,3\n")
    assert findings == [("row_width", 2), ("row_width", 3)] and rows == {4: ("u3", "x", "3")}


@given(
    lines=st.lists(
        st.sampled_from(["u1,a,1", "u2,b,2\r", "", 'u3,"x\ny",3', 'u4,"",4', "é,ü,5"]),
        max_size=30,
    ),
    end=st.sampled_from(["\n", ""]),
    size=st.integers(1, 40),
)
def test_pieces_cut_with_their_line_ends_are_the_pieces_counted(lines, end, size):
    """A hashed table's pieces find their line ends as they are cut (`Piece.ends`): the same
    pieces, lines and numbers as those only counted, every line's start and the last one's
    end, and `_lines` cuts a piece by them as by its own LF scan."""
    data = ("\n".join(lines) + end).encode()
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    counted = list(read._pieces("f.csv", iter(chunks)))
    found = list(read._pieces("f.csv", iter(chunks), b"", lambda: True))
    assert [(p.text, p.line, p.lines, p.final, p.cut) for p in found] == [
        (p.text, p.line, p.lines, p.final, p.cut) for p in counted
    ]
    for piece, mine in zip(counted, found, strict=True):
        assert piece.ends is None and mine.ends is not None
        starts = [0] + [i + 1 for i, byte in enumerate(piece.text) if byte == ord("\n")]
        assert mine.ends.tolist() == starts
        theirs, cut = read._lines(piece), read._lines(mine)
        assert (theirs is None) == (cut is None)
        if theirs is not None and cut is not None:
            assert theirs[0].to_list() == cut[0].to_list()
            assert theirs[1].tolist() == cut[1].tolist()


@pytest.mark.parametrize("hashed", [True, False])
def test_a_tables_pieces_find_their_line_ends_once_it_hashes_its_lines(monkeypatch, hashed):
    """`read_table` asks, as each piece after the header's is cut, whether the table it made
    hashes its lines (`_EndsWanted`): set before its batches are first asked for, every piece
    read then comes with its line ends (`Piece.ends`), and none does otherwise."""
    cut: list[bool] = []
    pieces = read._pieces

    def watched(*args, **kwargs):
        for piece in pieces(*args, **kwargs):
            cut.append(piece.ends is not None)
            yield piece

    monkeypatch.setattr(read, "_pieces", watched)
    lines = b"".join(b"u%d,a,%d\n" % (i, i) for i in range(200))
    data = b"id,name,n\n" + lines
    chunks = iter([data[i : i + 256] for i in range(0, len(data), 256)])
    table = read_table("f.csv", chunks)
    table.hash_lines = hashed
    rows = pl.concat(list(read.frames(table)))
    assert rows.height == 200 and (columns.LINEHASH in rows.columns) == hashed
    # The first piece, cut before the table was made, holds the header: never its ends.
    assert cut[0] is False and len(cut) > 2
    assert cut[1:] == [hashed] * (len(cut) - 1)
