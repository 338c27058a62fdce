"""A record leaves the roster only when a valid file no longer lists it (issue 13,
docs/DESIGN.md 3).

A row of a full file that is skipped keeps the record the roster holds for its ID, with the
records made from it; a line that could not be read at all withholds every removal of the
entities its file fills; a header-only full file removes everything, past the guard.
"""

import shutil
from pathlib import Path

import polars as pl
import pytest
from helpers import edit, rows, write

from rosterdrop.ingest.models import Issue
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)


def snapshot(district) -> dict[str, dict[str, tuple]]:
    """Every record of the district: entity -> sourcedId -> (status, content hash)."""
    from rosterdrop.roster.models import ENTITIES

    return {
        e: {r.sourced_id: (r.status, r.content_hash) for r in records(district, e)}
        for e in ENTITIES
    }


def related(district, user: str) -> dict[str, set[str]]:
    """The active records that belong to one user."""
    return {
        "enrollments": set(
            records(district, "enrollments")
            .filter(userSourcedId=user, status="active")
            .values_list("sourced_id", flat=True)
        ),
        "roles": set(
            records(district, "roles")
            .filter(userSourcedId=user, status="active")
            .values_list("sourced_id", flat=True)
        ),
        "demographics": set(
            records(district, "demographics")
            .filter(sourced_id=user, status="active")
            .values_list("sourced_id", flat=True)
        ),
    }


def codes(sync) -> list[str]:
    return list(Issue.objects.filter(sync=sync).values_list("code", flat=True))


def a_student(school) -> tuple[int, list[str]]:
    """A student's line in users.csv and its row: one with enrollments and demographics."""
    users = rows(school / "users.csv")
    enrolled = {r[5] for r in rows(school / "enrollments.csv")[1:]}
    demographics = {r[0] for r in rows(school / "demographics.csv")[1:]}
    for line, row in enumerate(users[1:], start=2):
        if row[5] == "student" and row[0] in enrolled and row[0] in demographics:
            return line, row
    raise AssertionError("no student with enrollments in the sample")


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("role", "wizard", "enum_invalid"),
        ("enabledUser", "maybe", "boolean_invalid"),
        ("sourcedId", "  {id}  ", "id_invalid"),
        ("givenName", "", "required_missing"),
        ("orgSourcedIds", "not a school!", "id_invalid"),
    ],
)
def test_a_skipped_row_keeps_its_record_and_what_hangs_on_it(district, school, column, value, code):
    import_path(district, school)
    line, row = a_student(school)
    user = row[0]
    before, mine = snapshot(district), related(district, user)
    assert all(mine.values())
    edit(school / "users.csv", line, "familyName", "Changed")  # not applied either
    edit(school / "users.csv", line, column, value.format(id=user))
    sync = import_path(district, school)
    assert sync.status == "no_changes"
    assert "keeps their records as they were" in sync.message
    assert code in codes(sync)
    assert snapshot(district) == before  # nothing removed, nothing updated
    assert related(district, user) == mine
    # Its enrollments and demographics, sent again, name a user the roster still holds.
    assert "reference_missing" not in codes(sync)
    [kept] = Issue.objects.filter(sync=sync, code="kept_as_it_was", value=user)
    assert kept.line == line and kept.value == user and kept.severity == "warning"
    assert "kept as it was" in kept.message and f"line {line}" in kept.message


def test_a_skipped_class_keeps_its_enrollments(district, school):
    import_path(district, school)
    classes = rows(school / "classes.csv")
    line, cls = 3, classes[2]
    enrolled = {r[0] for r in rows(school / "enrollments.csv")[1:] if r[3] == cls[0]}
    before = snapshot(district)
    edit(school / "classes.csv", line, "classType", "lecture")
    sync = import_path(district, school)
    assert sync.status == "no_changes"
    assert "keeps their records as they were" in sync.message
    assert snapshot(district) == before
    [kept] = Issue.objects.filter(sync=sync, code="kept_as_it_was")
    assert (kept.file, kept.line, kept.value) == ("classes.csv", line, cls[0])
    # Its enrollments name a class the roster still holds: they are not broken references.
    assert enrolled and "reference_missing" not in codes(sync)


def test_a_skipped_row_of_a_record_not_in_the_roster_keeps_nothing(district, school):
    users = rows(school / "users.csv")
    new = users[2]
    write(school / "users.csv", [users[0], users[1], *users[3:]])
    import_path(district, school)
    write(school / "users.csv", [*users[:2], [*new[:5], "wizard", *new[6:]], *users[3:]])
    sync = import_path(district, school)
    assert not records(district, "users").filter(sourced_id=new[0]).exists()
    assert "kept_as_it_was" not in codes(sync)


def test_an_unreadable_line_withholds_every_removal_of_its_file(district, school):
    import_path(district, school)
    users = rows(school / "users.csv")
    gone = users.pop(10)  # really left out: would be removed
    write(school / "users.csv", users)
    text = (school / "users.csv").read_text().splitlines(keepends=True)
    text[4] = text[4].replace(",", ',"x"y,', 1)  # text after a closing quote: not CSV
    (school / "users.csv").write_text("".join(text))
    before = snapshot(district)
    sync = import_path(district, school)
    assert "csv_syntax" in codes(sync)
    after = snapshot(district)
    for entity in ("users", "roles", "agents"):
        assert {k for k, (s, _) in after[entity].items() if s == "active"} == {
            k for k, (s, _) in before[entity].items() if s == "active"
        }
    assert after["users"][gone[0]] == before["users"][gone[0]]
    assert "reference_missing" not in codes(sync)
    [withheld] = Issue.objects.filter(sync=sync, code="removal_withheld")
    assert withheld.file == "users.csv" and withheld.severity == "warning"
    assert "could not be read" in withheld.message and "line 5" in withheld.message


def test_a_header_only_full_file_is_held_not_no_changes(district, school):
    import_path(district, school)
    users = rows(school / "users.csv")
    write(school / "users.csv", users[:1])
    # Its enrollments and demographics go with the users: this is the whole district emptied.
    write(school / "enrollments.csv", rows(school / "enrollments.csv")[:1])
    write(school / "demographics.csv", rows(school / "demographics.csv")[:1])
    sync = import_path(district, school)
    assert sync.status == "held"
    assert sync.changes["users"]["removed"] == len(users) - 1
    assert records(district, "users").filter(status="active").count() == len(users) - 1


def test_a_full_file_whose_every_row_was_skipped_removes_nothing(district, school):
    import_path(district, school)
    before = snapshot(district)
    table = rows(school / "courses.csv")
    write(school / "courses.csv", [table[0]] + [[*r[:4], "", *r[5:]] for r in table[1:]])
    sync = import_path(district, school)
    assert sync.status == "no_changes"
    assert "keeps their records as they were" in sync.message
    assert snapshot(district) == before


def test_a_row_whose_id_cannot_be_read_withholds_every_removal(district, school):
    import_path(district, school)
    users = rows(school / "users.csv")
    gone = users.pop(10)
    users[4][0] = ""  # which user is this? any of them
    write(school / "users.csv", users)
    sync = import_path(district, school)
    assert "required_missing" in codes(sync)
    assert records(district, "users").get(sourced_id=gone[0]).status == "active"
    [withheld] = Issue.objects.filter(sync=sync, code="removal_withheld")
    # Two users, the one left out and the one of line 5, and their roles.
    assert withheld.line == 5 and withheld.message.startswith("4 records not in users.csv")


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("sourcedId", "{id}\x00", "id_invalid"),
        ("sourcedId", "\u202e{id}", "id_invalid"),
        ("username", "x" * 300, "value_too_long"),
        ("givenName", "N" * 200_000, "value_too_long"),
        ("email", "a@b.org" + "x" * 1000, "value_too_long"),
    ],
)
def test_a_value_that_cannot_be_kept_skips_its_row_and_keeps_the_record(
    district, school, column, value, code
):
    import_path(district, school)
    line, row = a_student(school)
    before = snapshot(district)
    edit(school / "users.csv", line, column, value.format(id=row[0]))
    sync = import_path(district, school)
    assert sync.status == "no_changes"
    [issue] = Issue.objects.filter(sync=sync, code=code)
    assert issue.line == line and issue.severity == "error" and issue.value.isprintable()
    assert len(issue.value) < 300 and len(issue.message) < 600
    assert snapshot(district) == before
    assert "reference_missing" not in codes(sync)  # the user is still there
    if column == "sourcedId":  # which user is it? Then users.csv removes no one
        assert "removal_withheld" in codes(sync)
    else:
        assert Issue.objects.filter(sync=sync, code="kept_as_it_was", value=row[0]).exists()


def test_control_characters_are_removed_from_text(district, school):
    import_path(district, school)
    line, row = a_student(school)
    edit(school / "users.csv", line, "givenName", "Ana\x00\x1b[0m Mar\u202eía\tB")
    sync = import_path(district, school)
    assert sync.status == "applied"
    user = records(district, "users").get(sourced_id=row[0])
    assert user.givenName == "Ana[0m María\tB"
    [issue] = Issue.objects.filter(sync=sync, code="control_character_removed")
    assert issue.severity == "warning" and issue.line == line and issue.value.isprintable()


def test_an_id_of_free_text_with_a_control_character_skips_its_row():
    from rosterdrop.formats.clever import SCHOOLS
    from rosterdrop.formats.spec import Mode
    from rosterdrop.ingest.findings import FindingLog
    from rosterdrop.ingest.validate import RowChecker

    header = ["School_id", "School_name", "School_number"]
    frame = pl.DataFrame(
        {
            "School_id": ["S\x1b1", "S2", "S3"],
            "School_name": ["One", "Two\x00", "Th\u2066ree"],
            "School_number": ["1", "2", "3"],
            "_line": pl.Series([2, 3, 4], dtype=pl.UInt32),
        }
    )
    log = FindingLog()
    checker = RowChecker(SCHOOLS, header, Mode.BULK, log)
    kept = checker.check(frame)
    assert kept["School_id"].to_list() == ["S2", "S3"]
    assert kept["School_name"].to_list() == ["Two", "Three"]
    assert checker.rejected["_line"].to_list() == [2]
    found = {(f.code, f.line, f.severity, f.value) for f in log.findings}
    assert found == {
        ("control_character", 2, "error", "S\\x1b1"),
        ("control_character_removed", 3, "warning", "Two\\x00"),
        ("control_character_removed", 4, "warning", "Th\\u2066ree"),
    }


def test_a_control_character_in_a_header_never_reaches_the_database(district, school):
    text = (school / "users.csv").read_text().splitlines(keepends=True)
    text[0] = text[0].rstrip("\n") + ",metadata.no\x00te\n"
    text[1:] = [line.rstrip("\n") + ",x\n" for line in text[1:]]
    (school / "users.csv").write_text("".join(text))
    sync = import_path(district, school)
    assert sync.status == "applied"
    [issue] = Issue.objects.filter(sync=sync, code="header_control_character")
    assert issue.column == "metadata.no\\x00te" and issue.severity == "warning"
    metadata = records(district, "users").values_list("metadata", flat=True)
    kept = {k for m in metadata for k in m or {}}
    assert not [k for k in kept if k.endswith("te")]


def test_a_skipped_clever_section_keeps_its_class_course_term_and_teachers(db, tmp_path):
    from rosterdrop.districts.models import District

    clever = District.objects.create(slug="clever", name="Clever", format="clever")
    folder = tmp_path / "clever"
    shutil.copytree(Path(__file__).parent / "fixtures" / "clever", folder)
    assert import_path(clever, folder).status in ("applied", "applied_with_errors")
    before = snapshot(clever)
    assert {"00004:T0013", "00004:T0001"} <= set(before["enrollments"])
    edit(folder / "sections.csv", 5, "Teacher_id", "")  # section 00004, two teachers
    sync = import_path(clever, folder)
    assert "required_missing" in codes(sync)
    assert snapshot(clever) == before
    kept = set(Issue.objects.filter(sync=sync, code="kept_as_it_was").values_list("value", "line"))
    assert {("00004", 5), ("00004:T0013", 5), ("00004:T0001", 5)} <= kept


def test_a_section_skipped_for_its_school_keeps_the_course_keyed_by_that_school(db, tmp_path):
    """A course is keyed by its school: a section row without one cannot say which course it
    kept, so sections.csv removes no course (one warning), and the course stays."""
    from rosterdrop.districts.models import District

    clever = District.objects.create(slug="clever", name="Clever", format="clever")
    folder = tmp_path / "clever"
    shutil.copytree(Path(__file__).parent / "fixtures" / "clever", folder)
    edit(folder / "sections.csv", 5, "Course_number", "ART404")  # a course of this row alone
    assert import_path(clever, folder).status in ("applied", "applied_with_errors")
    before = snapshot(clever)
    assert before["courses"]["001:Art:ART404"][0] == "active"
    edit(folder / "sections.csv", 5, "School_id", "")
    sync = import_path(clever, folder)
    assert "required_missing" in codes(sync)
    assert snapshot(clever) == before
    [withheld] = Issue.objects.filter(sync=sync, code="removal_withheld")
    assert (withheld.file, withheld.line, withheld.severity) == ("sections.csv", 5, "warning")
    assert withheld.message.startswith("1 records not in sections.csv")
