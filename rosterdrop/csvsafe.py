"""Every CSV rosterdrop writes, safe to open in a spreadsheet (OWASP CSV injection; ASVS 5.0,
1.2.10): a cell that a spreadsheet would read as a formula gets a leading apostrophe, headers
included, since a custom template's column names come from the district."""

import csv
import io
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\0")


def cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(rows: Iterable[Iterable], delimiter: str = ",") -> str:
    """Rows as RFC 4180 CSV text (CRLF, quoted where needed), every cell through `cell`."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(
        [cell(v) for v in row] for row in rows
    )
    return out.getvalue()
