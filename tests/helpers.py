"""Small tools for writing roster files in tests, and for counting the rows a stage reads."""

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from rosterdrop.ingest.validate import RowChecker


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


def rows_through(monkeypatch: pytest.MonkeyPatch, stage: str) -> Counter:
    """Rows per file that pass through `RowChecker.<stage>` from now on in this test
    (`prepare`: every row parsed; `check_prepared`: the rows checked)."""
    counts: Counter = Counter()
    real = getattr(RowChecker, stage)

    def counted(self, frame):
        counts[self.file.name] += frame.height
        return real(self, frame)

    monkeypatch.setattr(RowChecker, stage, counted)
    return counts


FILES_12 = ("orgs", "academicSessions", "courses", "classes", "users", "roles", "enrollments",
            "demographics")  # fmt: skip


def delta(folder: Path, version: str, sent: dict[str, list[list[str]]]) -> Path:
    """A delta upload: `sent` maps a file (without .csv) to its rows, the header first; the
    manifest lists the others as absent."""
    folder.mkdir()
    manifest = [["propertyName", "value"], ["manifest.version", "1.0"]]
    manifest.append(["oneroster.version", version])
    names = FILES_12 if version == "1.2" else [f for f in FILES_12 if f != "roles"]
    manifest += [[f"file.{name}", "delta" if name in sent else "absent"] for name in names]
    write(folder / "manifest.csv", manifest)
    for name, table in sent.items():
        write(folder / f"{name}.csv", table)
    return folder
