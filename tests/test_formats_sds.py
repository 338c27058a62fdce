"""Microsoft School Data Sync: Microsoft's and OpenEducationAnalytics' real files, as they are."""

import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES
from django.conf import settings
from helpers import rows, same_rows_new_bytes, write

from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.reader import expand
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

SDS = SAMPLES / "sds-microsoft"
OEA = SAMPLES / "sds-openeducationanalytics" / "v1-lowercase"
BROKEN = SDS / "v2.1-2021-first-upload-with-errors"


def validate(path: Path, fmt: str | None = None) -> dict:
    checked = check(expand(path), Settings.named(fmt))
    return {**checked.as_dict(), "reason": checked.reason}


def file_rows(result: dict) -> dict[str, int]:
    return {f["name"]: f["rows"] for f in result["files"]}


def problems(result: dict) -> list[dict]:
    return [i for i in result["issues"] if i["severity"] != "warning"]


# SOURCES.md row counts; users = students + teachers, enrollments = students + teachers rosters.
V1_100 = {
    "School.csv": 2,
    "Section.csv": 28,
    "Student.csv": 86,
    "Teacher.csv": 12,
    "StudentEnrollment.csv": 602,
    "TeacherRoster.csv": 28,
}


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
        "school.csv": 5,
        "section.csv": 90,
        "student.csv": 100,
        "teacher.csv": 5,
        "studentenrollment.csv": 1050,
        "teacherroster.csv": 90,
    }
    assert result["counts"]["users"] == 105 and result["counts"]["enrollments"] == 1140
    assert result["counts"]["academicSessions"] == 10
    assert result["issues"] == []


def test_us_dates_are_stored_as_iso(db, district):
    district.format = "sds-v1"
    district.save()
    sync = import_path(district, SDS / "v1-us" / "100 Users")
    assert sync.status == "applied"
    term = records(district, "academicSessions").get()
    assert (term.data["startDate"], term.data["endDate"]) == ("2017-07-01", "2018-06-30")
    birth = records(district, "demographics").get(sourced_id="13001")
    assert birth.data["birthDate"] == "2000-04-02"
    student = records(district, "users").get(sourced_id="13001")
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
    # Of these US dates, those no other reading fits (8/24/2021, 10/26/1973, 6/6/2001) are
    # read with a warning; the rest (6/11/2022: June 11 or November 6?) stay refused.
    certain = (
        {("academicSessions.csv", 2, "startDate"), ("demographics.csv", 6, "birthDate")}
        | {("demographics.csv", 7, "birthDate")}
        | {("roles.csv", n, "roleStartDate") for n in (2, 3, 4, 6, 7)}
    )
    us_dates = {("date_normalised", *d[1:]) if d[1:] in certain else d for d in us_dates}
    phones = {("phone_invalid", "users.csv", n, c) for n in (3, 6) for c in ("phone", "sms")}
    year = "schoolYearSourcedId"
    dangling_year = {("reference_missing", "courses.csv", n, year) for n in (2, 3, 4)}
    misnamed = {("file_misnamed", "userflags.csv", None, "")}
    # What follows from the skipped sessions: their classes, then those classes' enrollments,
    # each naming the skipped row it follows from.
    consequences = {
        ("reference_skipped", "classes.csv", n, "sessionSourcedIds") for n in (2, 3)
    } | {("reference_skipped", "enrollments.csv", n, "classSourcedId") for n in range(2, 8)}
    assert found == us_dates | phones | dangling_year | misnamed | consequences
    assert len(result["issues"]) == len(found)
    assert not [i for i in result["issues"] if i["severity"] == "fatal"]
    [first] = [i for i in result["issues"] if i["file"] == "classes.csv" and i["line"] == 2]
    assert "academicSessions.csv line 3" in first["message"]
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
        [
            ["sourcedId", "title", "type", "schoolYear", "startDate", "endDate"],
            ["12000", "SY1516", "term", "2018", "2017-07-01", "2018-06-30"],
        ],
    )
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


def _to_oneroster_11(v1: Path, out: Path) -> Path:
    """The same district written as OneRoster 1.1: the same IDs, the same values."""
    out.mkdir()
    school, section = rows(v1 / "School.csv")[1:], rows(v1 / "Section.csv")[1:]
    students, teachers = rows(v1 / "Student.csv")[1:], rows(v1 / "Teacher.csv")[1:]
    blank = ["", ""]  # status, dateLastModified (a bulk file)

    def iso(us: str) -> str:
        month, day, year = us.split("/")
        return f"{year}-{int(month):02d}-{int(day):02d}"

    write(
        out / "manifest.csv",
        [["propertyName", "value"], ["manifest.version", "1.0"], ["oneroster.version", "1.1"]]
        + [[f"file.{name}", "bulk"] for name in (
            "academicSessions", "classes", "courses", "demographics", "enrollments", "orgs",
            "users",
        )],
    )  # fmt: skip
    write(
        out / "orgs.csv",
        [["sourcedId", "status", "dateLastModified", "name", "type", "identifier",
          "parentSourcedId"]]
        + [[r[0], *blank, r[1], "school", r[2], ""] for r in school],
    )  # fmt: skip
    write(
        out / "academicSessions.csv",
        [["sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate",
          "parentSourcedId", "schoolYear"],
         ["12000", *blank, "SY1516", "term", "2017-07-01", "2018-06-30", "", "2018"]],
    )  # fmt: skip
    courses = {r[8]: r for r in section}
    write(
        out / "courses.csv",
        [["sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title",
          "courseCode", "grades", "orgSourcedId", "subjects", "subjectCodes"]]
        + [[c, *blank, "", r[9], r[10], "", r[1], r[12], ""] for c, r in courses.items()],
    )  # fmt: skip
    write(
        out / "classes.csv",
        [["sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId",
          "classCode", "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects",
          "subjectCodes", "periods"]]
        + [[r[0], *blank, r[2], "", r[8], r[3], "scheduled", "", r[1], r[4], r[12], "", r[13]]
           for r in section],
    )  # fmt: skip
    people = [(r, "student", r[8], r[10]) for r in students]
    people += [(r, "teacher", r[7], "") for r in teachers]
    write(
        out / "users.csv",
        [["sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role",
          "username", "userIds", "givenName", "familyName", "middleName", "identifier", "email",
          "sms", "phone", "agentSourcedIds", "grades", "password"]]
        + [[r[0], *blank, "true", r[1], role, r[4], "", r[2], r[3],
            r[9], number, "", "", "", "", grade, ""]
           for r, role, number, grade in people],
    )  # fmt: skip
    write(
        out / "demographics.csv",
        [["sourcedId", "status", "dateLastModified", "birthDate", "sex"]]
        + [[r[0], *blank, iso(r[12]), ""] for r in students if r[12]],
    )
    school_of = {r[0]: r[1] for r in section}
    enrol = [(s, p, "student") for s, p in rows(v1 / "StudentEnrollment.csv")[1:]]
    enrol += [(s, p, "teacher") for s, p in rows(v1 / "TeacherRoster.csv")[1:]]
    write(
        out / "enrollments.csv",
        [["sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
          "userSourcedId", "role", "primary", "beginDate", "endDate"]]
        + [[f"E{n:05d}", *blank, s, school_of[s], p, role, "", "", ""]
           for n, (s, p, role) in enumerate(enrol, 1)],
    )  # fmt: skip
    return out


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("snapshot", ["kept", "rebuilt from the database"])
def test_district_moving_from_sds_v1_to_oneroster_keeps_people_and_classes(
    district, tmp_path, snapshot
):
    """People, schools, classes, courses and terms are matched by source ID. Enrollments have
    no ID in SDS v1 (they are keyed section:person) and their own sourcedIds in OneRoster: they
    are matched by class, person and role, and renamed -- nothing removed and added again.
    The match holds whether the roster's snapshot file is there or rebuilt from the database."""
    district.format = "sds-v1"
    district.save()
    assert import_path(district, SDS / "v1-us" / "100 Users").status == "applied"
    if snapshot != "kept":
        shutil.rmtree(settings.DATA_DIR / "roster")
    district.format = "oneroster-1.1"
    district.save()
    moved = import_path(district, _to_oneroster_11(SDS / "v1-us" / "100 Users", tmp_path / "or"))
    assert moved.status == "applied", moved.message
    for entity in ("orgs", "academicSessions", "courses", "classes", "users", "roles"):
        counts = moved.changes[entity]
        assert (counts["added"], counts["removed"], counts["reactivated"]) == (0, 0, 0), entity
    assert moved.changes["demographics"] == {
        "added": 0,
        "updated": 0,
        "removed": 0,
        "reactivated": 0,
        "unchanged": 86,
    }
    assert moved.changes["enrollments"] == {
        "added": 0,
        "updated": 630,
        "removed": 0,
        "reactivated": 0,
        "unchanged": 0,
    }
    # Only what really differs is an update: SDS v1's extra columns (kept as metadata), what
    # OneRoster says that SDS v1 does not (a term's school year, an enrollment's school), and
    # the enrollments' new IDs.
    changed = {
        (c.entity, f["field"].split(".")[0])
        for c in moved.record_changes.filter(action="updated")
        for f in c.fields
    }
    assert changed == {
        ("orgs", "metadata"),
        ("academicSessions", "schoolYear"),
        ("classes", "metadata"),
        ("users", "metadata"),
        ("enrollments", "sourcedId"),
        ("enrollments", "schoolSourcedId"),
    }
    renamed = moved.record_changes.filter(entity="enrollments").first().fields[0]
    assert ":" in renamed["before"] and renamed["after"].startswith("E")
    assert records(district, "users").filter(status="active").count() == 98
    enrollments = records(district, "enrollments")
    assert enrollments.filter(status="active", sourced_id__startswith="E").count() == 630
    # Each old ID is left as a removal leaves it, so that a reader polling the roster sees it go.
    gone = enrollments.filter(status="tobedeleted", changed_sync_id=moved.pk)
    assert gone.count() == 630 and not gone.filter(sourced_id__startswith="E").exists()
    assert enrollments.count() == 1260
    same_rows_new_bytes(tmp_path / "or")  # read and compared again, not recognised as re-sent
    again = import_path(district, tmp_path / "or")
    assert again.status == "no_changes"
    assert again.message == "Nothing changed since the last sync."
    # Back to SDS v1: every enrollment comes back under its old ID, the OneRoster ones are left
    # tobedeleted; a rename back, not a mass removal for the removal guard to hold.
    district.format = "sds-v1"
    district.save()
    back = import_path(district, SDS / "v1-us" / "100 Users")
    assert back.status == "applied", back.message
    assert back.changes["enrollments"]["reactivated"] == 630
    assert back.changes["enrollments"]["removed"] == 630
    gone = enrollments.filter(status="tobedeleted", changed_sync_id=back.pk)
    assert gone.count() == 630 and not gone.exclude(sourced_id__startswith="E").exists()
