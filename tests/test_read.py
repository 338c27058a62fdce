"""Reading: plainly quoted pieces go to polars, anything else to the csv module, with the same
rows either way; the csv module still reports broken rows at their lines."""

import polars as pl
import pytest

from rosterdrop.ingest import read
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


def _strict_only(monkeypatch) -> None:
    monkeypatch.setattr(read, "_delimiters_outside_quotes", lambda text, sep: -1)


def test_plain_quoting_reads_the_same_through_polars_and_the_csv_module(monkeypatch):
    text = HEADER + "".join(QUOTED)
    with monkeypatch.context() as patched:
        patched.setattr(read._Strict, "read", None)  # polars must read every piece
        fast, fast_findings = _read(text)
    _strict_only(monkeypatch)
    strict, strict_findings = _read(text)
    assert fast.equals(strict)
    assert fast["title"].to_list() == [
        "Algebra, Block", 'Say "hi"', "", "Plain", "Nguyễn, Ødegård", '"',
    ]  # fmt: skip
    assert fast["periods"].to_list() == ["1", "2", "", "3,4", "5", "6"]
    assert fast["_line"].to_list() == [2, 3, 4, 5, 6, 7]
    assert fast_findings == strict_findings == []


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
    assert read._delimiters_outside_quotes(line.encode(), ord(",")) == -1


def test_plain_quoting_counts_only_the_delimiters_outside_quotes():
    assert read._delimiters_outside_quotes(b'c1,"a,b,""c""",1\n', ord(",")) == 2


def test_a_ragged_row_among_quoted_ones_is_reported_at_its_line():
    text = HEADER + 'c1,"Algebra, Block",1\n' + 'c2,"Geometry",2,extra\n' + 'c3,"Art",3\n'
    frame, findings = _read(text)
    assert frame["sourcedId"].to_list() == ["c1", "c3"]
    [finding] = findings
    assert (finding.code, finding.line) == ("row_width", 3)
