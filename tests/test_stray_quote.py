"""Issue 13's first finding, end to end: a generated district of 50,000 students sent in a zip
by OpenSSH's sftp to `rosterdrop serve`, then sent again with one stray quote in the middle of
users.csv and a user renamed 1,000 lines after it. The quote's line is reported; no other user,
role, demographics record or enrollment is lost, and the rename is applied (the quote once
swallowed the rest of the file, and the sync removed what followed it)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GEN = Path(__file__).resolve().parents[1] / "bench" / "gen.py"
STUDENTS = 50_000
TABLES = ("roster_user", "roster_role", "roster_demographics", "roster_enrollment")


def _generate(out: Path) -> None:
    """A district of 50,000 students with few classes (its size is in users.csv)."""
    sizes = dict(teachers=100, classes=200, enrollments=STUDENTS + 200, schools=2, courses=20)
    args = [f"--{key}={value}" for key, value in sizes.items()]
    command = [sys.executable, str(GEN), str(out), f"--students={STUDENTS}", *args, "--seed=13"]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def _zip(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
    return path


def _active(server, table: str) -> int:
    [row] = server.query(f"select count(*) from {table} where status = 'active'")
    return row[0]


def test_a_stray_quote_in_a_big_district_removes_no_one(server, tmp_path):
    base = tmp_path / "base"
    _generate(base)
    server.openssh(f"put {_zip(base, tmp_path / 'roster.zip')}\n")
    server.wait_idle(timeout=600)
    assert [s["status"] for s in server.syncs()] == ["applied"]
    before = {table: _active(server, table) for table in TABLES}
    assert before["roster_user"] > STUDENTS

    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    users = broken / "users.csv"
    lines = users.read_bytes().split(b"\n")
    middle = len(lines) // 2
    values = lines[middle - 1].split(b",")
    values[8] = b'"' + values[8]  # givenName opens a quote that never closes
    lines[middle - 1] = b",".join(values)
    later = lines[middle + 999].split(b",")  # a user far after it is renamed: read, not lost
    later[9] = b"Afterquote"
    lines[middle + 999] = b",".join(later)
    users.write_bytes(b"\n".join(lines))
    server.openssh(f"put {_zip(broken, tmp_path / 'roster-again.zip')}\n")
    server.wait_idle(timeout=600)

    assert {table: _active(server, table) for table in TABLES} == before
    [renamed] = server.query(
        'select "familyName" from roster_user where sourced_id = ?', later[0].decode()
    )
    assert renamed[0] == "Afterquote"
    syncs = server.syncs()
    assert len(syncs) == 2 and syncs[1]["status"] == "applied_with_errors"
    issues = server.query(
        "select code, file, line from ingest_issue where sync_id = ? and severity = 'error'",
        syncs[1]["id"],
    )
    assert [tuple(i) for i in issues if i["file"] == "users.csv"] == [
        ("unterminated_quote", "users.csv", middle)
    ]
