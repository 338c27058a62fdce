"""Small tools for writing roster files in tests."""

import csv
import io
from pathlib import Path


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def write(path: Path, table: list[list[str]]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    path.write_text(out.getvalue(), encoding="utf-8")


def edit(path: Path, line: int, column: str, value: str) -> list[str]:
    """Set one cell by physical line (header = 1, files without multi-line values)."""
    table = rows(path)
    table[line - 1][table[0].index(column)] = value
    write(path, table)
    return table[line - 1]


def issues(result: dict, code: str) -> list[dict]:
    return [i for i in result["issues"] if i["code"] == code]


def same_rows_new_bytes(folder: Path) -> None:
    """Rewrite every file of a folder with CRLF line ends: the same records in other bytes,
    so that an import reads them again instead of recognising files it has seen."""
    for path in folder.iterdir():
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
