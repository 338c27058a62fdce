"""Microsoft School Data Sync: Microsoft's and OpenEducationAnalytics' real files, as they are."""

from pathlib import Path

import pytest
from conftest import SAMPLES
from helpers import rows, write

from rosterdrop.ingest.pipeline import check, expand, import_path
from rosterdrop.roster.models import Record

SDS = SAMPLES / "sds-microsoft"
OEA = SAMPLES / "sds-openeducationanalytics" / "v1-lowercase"
BROKEN = SDS / "v2.1-2021-first-upload-with-errors"


def validate(path: Path, fmt: str | None = None) -> dict:
    checked = check(expand(path), fmt)
    return {**checked.as_dict(), "reason": checked.reason}


def file_rows(result: dict) -> dict[str, int]:
    return {f["name"]: f["rows"] for f in result["files"]}


def problems(result: dict) -> list[dict]:
    return [i for i in result["issues"] if i["severity"] != "warning"]


# SOURCES.md row counts; users = students + teachers, enrollments = students + teachers rosters.
V1_100 = {
    "School.csv": 2, "Section.csv": 28, "Student.csv": 86, "Teacher.csv": 12,
    "StudentEnrollment.csv": 602, "TeacherRoster.csv": 28,
}  # fmt: skip


@pytest.mark.parametrize("variant", ["v1-us", "v1-uk"])
def test_sds_v1_100_users_imports_with_exact_counts(variant):
    result = validate(SDS / variant / "100 Users")
    assert result["format"] == "sds-v1"
    assert file_rows(result) == V1_100
    assert result["counts"] == {
        "orgs": 2, "academicSessions": 1, "courses": 28, "classes": 28,
        "users": 98, "roles": 98, "demographics": 86, "enrollments": 630,
    }  # fmt: skip
    assert result["issues"] == []


@pytest.mark.parametrize(
    ("folder", "users", "classes", "enrollments"),
    [
        (SDS / "v1-us" / "25 Users", 24, 2, 46),
        (SDS / "v1-us" / "Min Required Attributes", 24, 2, 46),
        (SDS / "v1-uk" / "25 Users", 24, 28, 158),
        (SDS / "v1-uk" / "Min Required Attributes", 24, 28, 158),
    ],
)
def test_other_sds_v1_sets_import_cleanly(folder, users, classes, enrollments):
    result = validate(folder)
    assert result["format"] == "sds-v1"
    assert result["counts"]["users"] == users
    assert result["counts"]["classes"] == classes
    assert result["counts"]["enrollments"] == enrollments
    assert result["issues"] == []


def test_lower_case_v1_from_openeducationanalytics():
    result = validate(OEA)
    assert result["format"] == "sds-v1"
    assert file_rows(result) == {
        "school.csv": 5, "section.csv": 90, "student.csv": 100, "teacher.csv": 5,
        "studentenrollment.csv": 1050, "teacherroster.csv": 90,
    }  # fmt: skip
    assert result["counts"]["users"] == 105 and result["counts"]["enrollments"] == 1140
    assert result["counts"]["academicSessions"] == 10
    assert result["issues"] == []


def test_us_dates_are_stored_as_iso(db, district):
    district.format = "sds-v1"
    district.save()
    sync = import_path(district, SDS / "v1-us" / "100 Users")
    assert sync.status == "applied"
    term = Record.objects.get(district=district, entity="academicSessions")
    assert (term.data["startDate"], term.data["endDate"]) == ("2017-07-01", "2018-06-30")
    birth = Record.objects.get(district=district, entity="demographics", sourced_id="13001")
    assert birth.data["birthDate"] == "2000-04-02"
    student = Record.objects.get(district=district, entity="users", sourced_id="13001")
    assert "Password" not in (student.data["metadata"] or {})  # secrets are never kept
    assert student.data["metadata"]["Graduation Year"] == "2019"  # unmapped columns are kept


def test_sds_v2_capitalised_enums_are_read_silently():
    result = validate(SDS / "v2")
    assert result["format"] == "sds-v2"
    assert result["counts"] == {
        "orgs": 5,
        "classes": 4,
        "users": 29,
        "roles": 29,
        "enrollments": 29,
    }
    assert result["issues"] == []


def test_sds_v21_imports_with_exact_counts():
    result = validate(SDS / "v2.1")
    assert result["format"] == "sds-v2.1"
    assert result["counts"] == {
        "orgs": 4, "academicSessions": 2, "courses": 3, "classes": 2, "users": 8,
        "roles": 7, "demographics": 6, "agents": 3, "enrollments": 6,
    }  # fmt: skip
    assert result["issues"] == []
    assert "userFlags.csv" in file_rows(result)


def test_microsofts_2021_first_upload_gives_exactly_its_known_defects():
    result = validate(BROKEN)
    found = {(i["code"], i["file"], i["line"], i["column"]) for i in result["issues"]}
    session_dates, role_dates = ("startDate", "endDate"), ("roleStartDate", "roleEndDate")
    us_dates = (
        {("date_invalid", "academicSessions.csv", n, c) for n in (2, 3) for c in session_dates}
        | {("date_invalid", "roles.csv", n, c) for n in range(2, 9) for c in role_dates}
        | {("date_invalid", "demographics.csv", n, "birthDate") for n in range(2, 8)}
    )
    phones = {("phone_invalid", "users.csv", n, c) for n in (3, 6) for c in ("phone", "sms")}
    year = "schoolYearSourcedId"
    dangling_year = {("reference_missing", "courses.csv", n, year) for n in (2, 3, 4)}
    misnamed = {("file_misnamed", "userflags.csv", None, "")}
    # What follows from the skipped sessions: their classes, then those classes' enrollments.
    consequences = {
        ("reference_missing", "classes.csv", n, "sessionSourcedIds") for n in (2, 3)
    } | {("reference_missing", "enrollments.csv", n, "classSourcedId") for n in range(2, 8)}
    assert found == us_dates | phones | dangling_year | misnamed | consequences
    assert len(result["issues"]) == len(found)
    assert not [i for i in result["issues"] if i["severity"] == "fatal"]
    [misnamed_issue] = [i for i in result["issues"] if i["code"] == "file_misnamed"]
    assert "userFlags.csv" in misnamed_issue["message"]


def test_detection_says_why():
    result = validate(SDS / "v1-uk" / "100 Users")
    assert "School.csv" in result["reason"] and "School Data Sync v1" in result["reason"]
    assert validate(SDS / "v2.1")["format"] == "sds-v2.1"
    assert validate(SDS / "v2")["format"] == "sds-v2"


def _to_sds_v21(v1: Path, out: Path) -> Path:
    """The same district written as SDS v2.1, the way a district's new export would."""
    out.mkdir()
    school, section = rows(v1 / "School.csv"), rows(v1 / "Section.csv")
    students, teachers = rows(v1 / "Student.csv"), rows(v1 / "Teacher.csv")
    write(
        out / "orgs.csv",
        [["sourcedId", "name", "type"]] + [[r[0], r[1], "school"] for r in school[1:]],
    )
    people = [(r, "student") for r in students[1:]] + [(r, "teacher") for r in teachers[1:]]
    head = students[0]
    col = {name: head.index(name) for name in head}
    write(
        out / "users.csv",
        [["sourcedId", "username", "givenName", "familyName"]]
        + [[r[0], r[4], r[2], r[3]] for r, _ in people],
    )
    write(
        out / "roles.csv",
        [["userSourcedId", "orgSourcedId", "role"]]
        + [[r[0], r[col["School SIS ID"]], role] for r, role in people],
    )
    write(
        out / "classes.csv",
        [["sourcedId", "orgSourcedId", "title", "sessionSourcedIds", "courseSourcedId", "code"]]
        + [[r[0], r[1], r[2], r[4], r[8], r[3]] for r in section[1:]],
    )
    write(
        out / "academicSessions.csv",
        [["sourcedId", "title", "type", "schoolYear", "startDate", "endDate"],
         ["12000", "SY1516", "term", "2018", "2017-07-01", "2018-06-30"]],
    )  # fmt: skip
    write(
        out / "courses.csv",
        [["sourcedId", "orgSourcedId", "title", "code"]]
        + [[r[8], r[1], r[9], r[10]] for r in section[1:]],
    )
    enrol = [[s, p, "student"] for s, p in rows(v1 / "StudentEnrollment.csv")[1:]]
    enrol += [[s, p, "teacher"] for s, p in rows(v1 / "TeacherRoster.csv")[1:]]
    write(out / "enrollments.csv", [["classSourcedId", "userSourcedId", "role"]] + enrol)
    return out


@pytest.mark.django_db(transaction=True)
def test_district_moving_from_sds_v1_to_v21_keeps_its_people(district, tmp_path):
    district.format = "sds-v1"
    district.save()
    first = import_path(district, SDS / "v1-us" / "100 Users")
    assert first.status == "applied"
    district.format = "sds-v2.1"
    district.save()
    moved = import_path(district, _to_sds_v21(SDS / "v1-us" / "100 Users", tmp_path / "v21"))
    assert moved.status == "applied", (moved.message, moved.changes)
    for entity in (
        "orgs",
        "users",
        "roles",
        "classes",
        "courses",
        "academicSessions",
        "enrollments",
    ):
        counts = moved.changes[entity]
        assert counts["added"] == 0 and counts["removed"] == 0 and counts["reactivated"] == 0, (
            entity
        )
    # Only what really differs is an update: v2.1 does not carry v1's extra columns.
    user_change = moved.record_changes.filter(entity="users").first()
    changed = {f["field"] for f in user_change.fields}
    assert changed and all(
        f.startswith("metadata") or f in ("middleName", "identifier", "grades") for f in changed
    )
    assert moved.changes["enrollments"]["unchanged"] == 630
