"""ALO as its Import Setup Guide says (issue 14, item 3): a district data manager's 7-file
zip, written by hand the way ALO's templates show it (small numeric IDs in every file)."""

import zipfile
from pathlib import Path

import pytest
from helpers import issues

from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

MANIFEST = "District ID,District Name,School Year\noakridge,Oak Ridge SD,2026-2027\n"
SCHOOLS = "ID,Name\n1,Oak Ridge Elementary\n2,Oak Ridge Middle\n"
CLASSES = "ID,Name,School ID,Grade\n1,Reading 3,1,3\n2,Math 7,2,7\n3,Science 7,2,7\n"
STUDENTS = (
    "ID,First Name,Last Name,Grade,School ID,Teacher ID\n"
    "1,Ann,Lee,3,1,ST1\n"
    "2,Bo,Kim,7,2,ST2\n"
    "3,Cy,Ray,7,2,ST2\n"
)
STAFF = (
    "ID,First Name,Last Name,Email\n"
    "ST1,Bill,Hart,bill@oakridge.example.org\n"
    "ST2,Dana,Fox,dana@oakridge.example.org\n"
    "ST3,Eve,Stone,eve@oakridge.example.org\n"
)
STUDENT_ENROLLMENTS = "ID,Student ID,Class ID\n1,1,1\n2,2,2\n3,3,2\n4,2,3\n5,3,3\n"
# ST2 teaches two classes at school 2 and is also school-level staff there; ST3 is district
# staff. The IDs 1-5 are those of StudentEnrollments.csv: separate files, separate IDs.
STAFF_ENROLLMENTS = (
    "ID,Staff ID,Class ID,School ID\n1,ST1,1,1\n2,ST2,2,2\n3,ST2,3,2\n4,ST2,,2\n5,ST3,,\n"
)

FILES = {
    "Manifest.csv": MANIFEST,
    "Schools.csv": SCHOOLS,
    "Classes.csv": CLASSES,
    "Students.csv": STUDENTS,
    "Staff.csv": STAFF,
    "StudentEnrollments.csv": STUDENT_ENROLLMENTS,
    "StaffEnrollments.csv": STAFF_ENROLLMENTS,
}


def alo_zip(tmp_path: Path, **changes: str | None) -> Path:
    """The clean zip, with files replaced (Staff_csv="...") or left out (Staff_csv=None)."""
    files = dict(FILES)
    for name, data in changes.items():
        name = name.replace("_csv", ".csv")
        if data is None:
            files.pop(name)
        else:
            files[name] = data
    path = tmp_path / "oakridge.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def validate(path: Path) -> dict:
    return check([path], Settings.named("alo", "oakridge")).as_dict()


def test_a_clean_zip_whose_two_enrollment_files_both_number_their_ids_from_1_is_applied(
    tmp_path,
):
    result = validate(alo_zip(tmp_path))
    assert result["issues"] == []
    # 5 student enrollments and the 3 staff class enrollments: none taken for a duplicate.
    assert result["counts"]["enrollments"] == 8


def test_a_teacher_in_a_class_and_school_level_staff_at_the_same_school_holds_both_roles(
    tmp_path, db
):
    from rosterdrop.districts.models import District

    district = District.objects.create(slug="oakridge", name="Oak Ridge", format="alo")
    sync = import_path(district, alo_zip(tmp_path))
    assert sync.status == "applied", list(sync.issues.values_list("message", flat=True))
    roles = {
        (r.data["userSourcedId"], r.data["orgSourcedId"], r.data["role"])
        for r in records(district, "roles")
        if r.data["userSourcedId"] == "ST2"
    }
    assert roles == {("ST2", "2", "teacher"), ("ST2", "2", "siteAdministrator")}
    teachers = {
        r.data["classSourcedId"]
        for r in records(district, "enrollments")
        if r.data["role"] == "teacher"
    }
    assert teachers == {"1", "2", "3"}  # every class keeps its teacher


def test_a_duplicate_names_both_rows_by_file_and_line_and_never_an_internal_key(tmp_path):
    # ST2 listed twice as school-level staff at school 2 (lines 5 and 6).
    data = STAFF_ENROLLMENTS + "6,ST2,,2\n"
    [issue] = issues(validate(alo_zip(tmp_path, StaffEnrollments_csv=data)), "duplicate_id")
    assert (issue["file"], issue["line"]) == ("StaffEnrollments.csv", 7)
    assert "StaffEnrollments.csv line 5" in issue["message"]
    assert "ST2:2" not in issue["message"] and "ST2:2" not in issue["value"]
    assert "Staff ID" in issue["message"] and "School ID" in issue["message"]


def test_a_repeated_enrollment_id_names_the_row_it_repeats(tmp_path):
    data = STUDENT_ENROLLMENTS + "3,1,3\n"
    [issue] = issues(validate(alo_zip(tmp_path, StudentEnrollments_csv=data)), "duplicate_id")
    assert (issue["file"], issue["line"], issue["value"]) == ("StudentEnrollments.csv", 7, "3")
    assert "StudentEnrollments.csv line 4" in issue["message"]


WITH_STUDENT_NUMBER = (
    "ID,First Name,Last Name,Grade,School ID,Teacher ID,Student Number\n"
    "1,Ann,Lee,3,1,ST1,S-0001\n"
    "2,Bo,Kim,7,2,ST2,S-0002\n"
    "3,Cy,Ray,7,2,ST2,\n"
)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("Students_csv", WITH_STUDENT_NUMBER),
        (
            "Staff_csv",
            STAFF.replace("Email\n", "Email,Primary ID\n", 1).replace(".org\n", ".org,1\n"),
        ),
    ],
)
def test_the_guides_optional_columns_are_accepted(tmp_path, name, data):
    result = validate(alo_zip(tmp_path, **{name: data}))
    assert result["issues"] == [] and result["counts"]["users"] == 6


def test_a_student_number_becomes_the_students_identifier(tmp_path, db):
    from rosterdrop.districts.models import District

    district = District.objects.create(slug="oakridge", name="Oak Ridge", format="alo")
    sync = import_path(district, alo_zip(tmp_path, Students_csv=WITH_STUDENT_NUMBER))
    assert sync.status == "applied"
    [ann] = [r for r in records(district, "users") if r.sourced_id == "1"]
    assert ann.data["identifier"] == "S-0001"


def test_an_email_that_is_not_an_address_is_a_row_error(tmp_path):
    staff = STAFF.replace("eve@oakridge.example.org", "eve(at)oakridge")
    result = validate(alo_zip(tmp_path, Staff_csv=staff))
    [issue] = issues(result, "email_invalid")
    assert (issue["severity"], issue["file"], issue["line"]) == ("error", "Staff.csv", 4)
    assert not [i for i in result["issues"] if i["severity"] == "fatal"]


def test_a_grade_that_is_not_a_grade_is_a_row_error(tmp_path):
    students = STUDENTS.replace("1,Ann,Lee,3,", "1,Ann,Lee,Third,")
    result = validate(alo_zip(tmp_path, Students_csv=students))
    [issue] = issues(result, "enum_invalid")
    assert (issue["severity"], issue["file"], issue["line"]) == ("error", "Students.csv", 2)
    # Her enrollment names a student who was skipped for her own error: said, not fatal.
    assert not [i for i in result["issues"] if i["severity"] == "fatal"]
    [follow] = issues(result, "reference_skipped")
    assert (follow["file"], follow["line"]) == ("StudentEnrollments.csv", 2)
    assert "Students.csv line 2" in follow["message"]


def test_a_fatal_message_never_says_both_kept_and_nothing_applied(tmp_path):
    students = STUDENTS.replace("Teacher ID\n", "Teacher ID,Homeroom\n", 1)
    [issue] = issues(validate(alo_zip(tmp_path, Students_csv=students)), "header_unknown_column")
    assert issue["severity"] == "fatal" and "nothing was applied" in issue["message"]
    assert "kept" not in issue["message"]


def test_the_seven_templates_with_the_accounts_manifest_download_from_the_overview_as_a_zip(db):
    import io

    from django.urls import reverse
    from web_fixtures import make_user, signed_in

    from rosterdrop.districts.models import District

    district = District.objects.create(slug="oakridge", name="Oak Ridge SD", format="alo")
    client = signed_in(make_user("data@oakridge.test", district))
    page = client.get(reverse("web:district", args=["oakridge"])).content.decode()
    link = reverse("web:file_templates_zip", args=["oakridge"])
    assert link in page
    response = client.get(link)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(response.content)) as z:
        assert set(FILES) <= set(z.namelist())
        manifest = z.read("Manifest.csv").decode()
    assert manifest.splitlines()[1].startswith("oakridge,Oak Ridge SD,")
    # The manifest alone, as the overview lists it, is the same file.
    single = client.get(reverse("web:file_template", args=["oakridge", "Manifest.csv"]))
    assert single.status_code == 200 and single.content.decode() == manifest
    # Another district's admin gets nothing.
    District.objects.create(slug="elm", name="Elm", format="alo")
    assert client.get(reverse("web:file_templates_zip", args=["elm"])).status_code == 404


def test_a_zip_with_several_fatal_defects_lists_them_all_at_once(tmp_path):
    manifest = MANIFEST.replace("oakridge,", "elmwood,")
    classes = "ID,Grade\n1,3\n"
    schools = SCHOOLS + "3,Oak Ridge Middle\n"  # a school name twice: a row check
    path = alo_zip(
        tmp_path,
        Manifest_csv=manifest,
        Staff_csv=None,
        Students_csv=None,
        Classes_csv=classes,
        Schools_csv=schools,
    )
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("students.csv", STUDENTS)
        z.writestr("notes.txt", "remember the bus routes\n")
    found = validate(path)["issues"]
    fatal = {(i["code"], i["file"]) for i in found if i["severity"] == "fatal"}
    assert {
        ("manifest_account_mismatch", "Manifest.csv"),
        ("file_missing", "Staff.csv"),
        ("file_missing", "Students.csv"),
        ("file_misnamed", "students.csv"),
        ("file_unknown", "notes.txt"),
        ("header_missing_column", "Classes.csv"),
        ("duplicate_value", "Schools.csv"),
    } <= fatal
    [header] = [i for i in found if i["code"] == "header_missing_column"]
    assert "'Name'" in header["message"] and "'School ID'" in header["message"]
    assert "the columns found are ID, Grade" in header["message"]
    [missing] = [i for i in found if i["file"] == "Students.csv"]
    assert "found 'students.csv'" in missing["message"]
