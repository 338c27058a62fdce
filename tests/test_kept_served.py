"""Issue 13, against the real thing: a full district with one invalid row for a user already in
the roster, sent through `rosterdrop import` and through `rosterdrop serve` with OpenSSH's sftp;
that user and their enrollments are still there, unchanged."""

import csv
import io
import json
import shutil
import subprocess
import zipfile

import pytest
from sftp_fixtures import DISTRICT_LARGE, ROSTERDROP, Server, base_env

pytestmark = pytest.mark.slow


def with_one_invalid_row(target) -> str:
    """district-large.zip with one enrolled student's row made invalid (a role no format
    knows, and a new family name that must not be applied either); returns that user's ID."""
    with zipfile.ZipFile(DISTRICT_LARGE) as source:
        members = {name: source.read(name) for name in source.namelist()}
    enrolled = {
        row["userSourcedId"]
        for row in csv.DictReader(io.StringIO(members["enrollments.csv"].decode()))
    }
    table = list(csv.reader(io.StringIO(members["users.csv"].decode())))
    header = table[0]
    row = next(r for r in table[1:] if r[header.index("role")] == "student" and r[0] in enrolled)
    row[header.index("role")] = "wizard"
    row[header.index("familyName")] = "Changed"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    members["users.csv"] = out.getvalue().encode()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return row[0]


def held_by(server: Server, user: str) -> dict[str, list[tuple]]:
    """What the roster holds of one user: the user, roles and enrollments, with status and
    content hash, and every other record's count."""
    query = server.query
    return {
        "user": [tuple(r) for r in query(
            "select sourced_id, status, content_hash, changed_sync_id from roster_user "
            "where sourced_id = ?", user)],
        "roles": [tuple(r) for r in query(
            'select sourced_id, status, content_hash from roster_role where "userSourcedId" = ? '
            "order by sourced_id", user)],
        "enrollments": [tuple(r) for r in query(
            "select sourced_id, status, content_hash from roster_enrollment "
            'where "userSourcedId" = ? order by sourced_id', user)],
        "active": [tuple(r) for r in query(
            "select (select count(*) from roster_user where status = 'active'), "
            "(select count(*) from roster_enrollment where status = 'active')")],
    }  # fmt: skip


def check_kept(server: Server, user: str, before: dict, sync: dict) -> None:
    assert held_by(server, user) == before  # not removed, not updated
    assert sync["status"] == "no_changes"
    assert before["user"][0][1] == "active" and before["enrollments"]
    assert all(status == "active" for _, status, _ in before["enrollments"])
    codes = {(i["code"], i["file"]) for i in sync["issues"]}
    assert {("enum_invalid", "users.csv"), ("kept_as_it_was", "users.csv")} <= codes


def test_one_invalid_row_through_rosterdrop_import_keeps_its_user(sftp_template, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sftp_template[0], data)
    env = base_env(data)

    def rosterdrop_import(path) -> dict:
        done = subprocess.run(
            [ROSTERDROP, "import", str(path), "--district", "alpha", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return json.loads(done.stdout)

    assert rosterdrop_import(DISTRICT_LARGE)["status"] == "applied"
    user = with_one_invalid_row(tmp_path / "tonight.zip")
    server = Server(data, sftp_template[1], {})  # not started: only its queries
    before = held_by(server, user)
    check_kept(server, user, before, rosterdrop_import(tmp_path / "tonight.zip"))


def test_one_invalid_row_over_sftp_keeps_its_user(server, tmp_path):
    first = tmp_path / "roster.zip"
    shutil.copy(DISTRICT_LARGE, first)
    server.openssh(f"put {first}\n")
    server.wait_idle()
    user = with_one_invalid_row(tmp_path / "tonight.zip")
    before = held_by(server, user)
    server.openssh(f"put {tmp_path / 'tonight.zip'}\n")
    server.wait_idle()
    first, tonight = sorted(server.sync_list(), key=lambda s: s["sync"])
    assert first["status"] == "applied"
    check_kept(server, user, before, tonight)
