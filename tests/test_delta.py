"""OneRoster delta files: rows marked tobedeleted remove exactly the records they name, rows
marked active bring removed ones back, and an ID the roster does not have is reported
(SQLite or PostgreSQL, whichever the run is configured for)."""

import io
import zipfile
from pathlib import Path

import pytest
from conftest import SCHOOL_SMALL
from django.core.management import call_command
from helpers import delta, issues, rows

from rosterdrop.districts.models import District
from rosterdrop.ingest.report import summary
from rosterdrop.ingest.syncs import approve, import_path
from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)

NAMED = ("users", "roles", "enrollments", "demographics")


def active(district, entity: str) -> int:
    return records(district, entity).filter(status="active").count()


def status(district, entity: str, sourced_id: str) -> str:
    return records(district, entity).get(sourced_id=sourced_id).status


@pytest.fixture
def bulk(tmp_path) -> Path:
    """The small school as a OneRoster 1.2 package (exported by rosterdrop), unpacked: it has
    a roles file, which 1.1 has not."""
    source = District.objects.create(slug="source", name="Source", format="oneroster-1.1")
    assert import_path(source, SCHOOL_SMALL).status == "applied"
    package = tmp_path / "bulk.zip"
    call_command("export", source.slug, "--output", str(package), stdout=io.StringIO())
    folder = tmp_path / "bulk"
    with zipfile.ZipFile(package) as zf:
        zf.extractall(folder)
    return folder


@pytest.fixture
def district(bulk):
    """A OneRoster 1.2 district holding the bulk package."""
    district = District.objects.create(
        slug="springfield", name="Springfield", format="oneroster-1.2"
    )
    assert import_path(district, bulk).status == "applied"
    return district


def marked(table: list[list[str]], row: list[str], value: str) -> list[str]:
    """`row` with its status set to `value`."""
    changed = list(row)
    changed[table[0].index("status")] = value
    return changed


def picks(bulk: Path) -> dict[str, list[list[str]]]:
    """One row of each named file, as the bulk package has them (header first): a user
    without guardians, and records of other users, so each row names one record only."""
    tables = {name: rows(bulk / f"{name}.csv") for name in NAMED}
    users = tables["users"]
    user = next(r for r in users[1:] if not r[users[0].index("agentSourcedIds")])
    chosen = {"users": user}
    for name in ("roles", "enrollments"):
        at = tables[name][0].index("userSourcedId")
        chosen[name] = next(r for r in tables[name][1:] if r[at] != user[0])
    chosen["demographics"] = next(r for r in tables["demographics"][1:] if r[0] != user[0])
    return {name: [tables[name][0], row] for name, row in chosen.items()}


def with_status(picked: dict[str, list[list[str]]], value: str) -> dict[str, list[list[str]]]:
    return {name: [t[0], marked(t, t[1], value)] for name, t in picked.items()}


def test_a_delta_removes_exactly_the_records_it_marks_tobedeleted(district, bulk, tmp_path):
    before = {e: active(district, e) for e in NAMED}
    picked = picks(bulk)
    sync = import_path(
        district, delta(tmp_path / "delta", "1.2", with_status(picked, "tobedeleted"))
    )
    assert sync.status == "applied", sync.message
    for entity, table in picked.items():
        assert sync.changes[entity]["removed"] == 1, entity
        assert status(district, entity, table[1][0]) == "tobedeleted"
        assert active(district, entity) == before[entity] - 1
    # Nothing else changed: no other removal (the user had no guardian links to take along).
    for entity, counts in sync.changes.items():
        assert counts == {**dict.fromkeys(counts, 0), "removed": int(entity in NAMED)}, entity
    # The export's users.csv has 1.2.1's columns, which the 1.2 spec reads without a word.
    assert summary(sync)["issues"] == []


def test_a_delta_brings_removed_records_back(district, bulk, tmp_path):
    before = {e: active(district, e) for e in NAMED}
    picked = picks(bulk)
    gone = import_path(
        district, delta(tmp_path / "gone", "1.2", with_status(picked, "tobedeleted"))
    )
    assert gone.status == "applied"
    back = import_path(district, delta(tmp_path / "back", "1.2", with_status(picked, "active")))
    assert back.status == "applied", back.message
    for entity, table in picked.items():
        assert back.changes[entity]["reactivated"] == 1, entity
        assert back.changes[entity]["removed"] == 0
        assert status(district, entity, table[1][0]) == "active"
        assert active(district, entity) == before[entity]


def test_a_delta_deleting_an_id_the_roster_lacks_warns_and_changes_nothing(
    district, bulk, tmp_path
):
    table = rows(bulk / "enrollments.csv")
    stranger = marked(table, table[1], "tobedeleted")
    stranger[0] = "no-such-enrollment"
    users = rows(bulk / "users.csv")
    nobody = marked(users, users[1], "tobedeleted")
    nobody[0] = "no-such-user"
    sent = {"enrollments": [table[0], stranger], "users": [users[0], nobody]}
    before = {e: active(district, e) for e in NAMED}
    sync = import_path(district, delta(tmp_path / "delta", "1.2", sent))
    assert sync.status == "no_changes"
    assert {e: active(district, e) for e in NAMED} == before
    found = {i["file"]: i for i in issues(summary(sync), "delete_not_in_roster")}
    assert set(found) == {"enrollments.csv", "users.csv"}  # one a line, none for its records
    warning = found["enrollments.csv"]
    assert warning["severity"] == "warning"
    assert (warning["line"], warning["column"], warning["value"]) == (
        2,
        "sourcedId",
        "no-such-enrollment",
    )
    assert (
        "'no-such-enrollment'" in warning["message"] and "nothing was removed" in warning["message"]
    )
    assert found["users.csv"]["value"] == "no-such-user"


def test_delta_removals_count_against_the_removal_guard(district, bulk, tmp_path):
    table = rows(bulk / "demographics.csv")
    half = [marked(table, r, "tobedeleted") for r in table[1 : len(table) // 2 + 1]]
    before = active(district, "demographics")
    held = import_path(
        district, delta(tmp_path / "delta", "1.2", {"demographics": [table[0], *half]})
    )
    assert held.status == "held", held.message
    assert "demographics" in held.message
    assert active(district, "demographics") == before  # nothing applied
    assert approve(held, "test").status == "applied"
    assert active(district, "demographics") == before - len(half)


def test_a_single_tobedeleted_enrollment_in_a_11_delta_zip_is_applied(tmp_path):
    """As reported: a zip whose manifest says file.enrollments,delta, one row."""
    district = District.objects.create(
        slug="springfield", name="Springfield", format="oneroster-1.1"
    )
    assert import_path(district, SCHOOL_SMALL).status == "applied"
    table = rows(SCHOOL_SMALL / "enrollments.csv")
    row = marked(table, table[3], "tobedeleted")
    folder = delta(tmp_path / "delta", "1.1", {"enrollments": [table[0], row]})
    package = tmp_path / "delta.zip"
    with zipfile.ZipFile(package, "w") as zf:
        for path in folder.iterdir():
            zf.write(path, path.name)
    sync = import_path(district, package)
    assert sync.status == "applied", sync.message
    assert sync.changes["enrollments"]["removed"] == 1
    assert status(district, "enrollments", row[0]) == "tobedeleted"


def test_a_12_final_users_file_with_resource_ids_reads_without_a_word(district, bulk, tmp_path):
    """OneRoster 1.2 (June 2022) has users.resourceSourcedIds, 1.2.1 dropped it: both read."""
    users = rows(bulk / "users.csv")
    at = users[0].index("userMasterIdentifier") + 1
    final = [[*r[:at], "", *r[at:]] for r in users]
    final[0][at] = "resourceSourcedIds"
    changed = marked(final, final[1], "active")
    changed[final[0].index("givenName")] = "Renamed"
    sync = import_path(district, delta(tmp_path / "delta", "1.2", {"users": [final[0], changed]}))
    assert sync.status == "applied", sync.message
    assert sync.changes["users"]["updated"] == 1
    assert summary(sync)["issues"] == []
