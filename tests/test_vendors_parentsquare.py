"""ParentSquare's data assistant tells the truth (issue 14, item 4): a district data manager's
nightly files in which a staff member has no phone or email (so their section has no
teacher) and two parents name a student who is not loaded."""

from pathlib import Path

import pytest
from django.urls import reverse
from web_fixtures import signed_in

from rosterdrop.ingest.syncs import import_path

pytestmark = pytest.mark.django_db(transaction=True)

FILES = {
    "schools.csv": "school_id,school_name,school_phone\n1,Elm Elementary,+15550100001\n",
    "students.csv": (
        "student_id,school_id,first_name,last_name,grade,email,language\n"
        "S01,1,Ann,Lee,3,,en\n"
        "S02,1,Bo,Kim,3,,en\n"
    ),
    "staff.csv": (
        "staff_id,school_id,first_name,last_name,email,phone,title\n"
        "T10,1,Bill,Hart,bill@elm.example.org,,Teacher\n"
        "T30,1,Tess,Nobody,,,Teacher\n"
    ),
    "sections.csv": (
        "section_id,school_id,section_name,teacher_id,course_name,period\n"
        "S1,1,Reading 3,T10,Reading,1\n"
        "S3,1,Math 3,T30,Math,2\n"
    ),
    "rosters.csv": "section_id,student_id\nS1,S01\nS1,S02\nS3,S01\n",
    "parents.csv": (
        "parent_id,student_id,first_name,last_name,email,phone,relationship,language\n"
        "P1,S01,Pam,Lee,pam@home.example,,mother,en\n"
        "P3,S99,Paul,Gone,paul@home.example,,father,en\n"
        "P4,S98,Petra,Gone,petra@home.example,,mother,en\n"
    ),
}


@pytest.fixture
def synced(district, tmp_path: Path):
    district.format = "parentsquare"
    district.save()
    folder = tmp_path / "nightly"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    sync = import_path(district, folder)
    assert sync.status == "applied_with_errors", sync.message
    return sync


def assistant(admin, district) -> str:
    return signed_in(admin).get(reverse("web:assistant", args=[district.slug])).content.decode()


def why(admin, district, query: str) -> str:
    url = reverse("web:why", args=[district.slug])
    return signed_in(admin).get(url, {"id": query}).content.decode()


def section(page: str, title: str) -> str:
    """The text of the card headed `title`."""
    start = page.index(title)
    return page[start : page.index("</section>", start)]


def test_skipped_staff_and_parents_are_listed_by_the_file_they_came_from(synced, district, admin):
    page = assistant(admin, district)
    staff = section(page, "Staff not imported")
    assert "All staff rows were imported" not in staff
    assert "Tess Nobody" in staff and "staff.csv line 3" in staff and "phone or email" in staff
    parents = section(page, "Parents not imported")
    assert "All parent rows were imported" not in parents
    assert "Paul Gone" in parents and "parents.csv line 3" in parents
    assert "Petra Gone" in parents and "parents.csv line 4" in parents
    assert "Pam Lee" not in parents


def test_parents_are_not_users_in_no_school(synced, district, admin):
    nowhere = section(assistant(admin, district), "Users in no school")
    assert "Pam Lee" not in nowhere and "Everyone belongs to a school" in nowhere


def test_why_is_a_parent_not_in_the_roster_names_the_issue_on_its_row(synced, district, admin):
    page = why(admin, district, "P3")
    assert "No issue mentions it" not in page
    issues = section(page, "Issues on its rows")
    assert "parents.csv line 3" in issues and "S99" in issues


def test_why_follows_the_chain_of_causes_from_a_section_without_teacher(synced, district, admin):
    page = why(admin, district, "S3")
    # S3 is in the roster, linked; its teacher is not.
    roster = section(page, "In the roster")
    assert reverse("web:record", args=[district.slug, "classes", "S3"]) in roster
    issues = section(page, "Issues on its rows")
    # sections.csv line 3: its teacher T30 was skipped <- staff.csv line 3: no phone or email.
    assert issues.index("sections.csv line 3") < issues.index("staff.csv line 3")
    assert "T30" in issues and "phone or email" in issues
    staff = why(admin, district, "T30")
    assert "No record has this ID" in staff
    found = section(staff, "Issues on its rows")
    assert "staff.csv line 3" in found and "sections.csv line 3" in found


def test_an_id_in_the_roster_is_said_to_be_there_with_a_link(synced, district, admin):
    page = why(admin, district, "S01")
    roster = section(page, "In the roster")
    assert "is in the roster" in roster
    assert reverse("web:record", args=[district.slug, "users", "S01"]) in roster


def test_a_header_with_dashes_says_what_was_found_and_the_other_files_are_checked_too(tmp_path):
    from rosterdrop.ingest.engine import Settings, check

    folder = tmp_path / "nightly"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    sections = FILES["sections.csv"].replace("section_id,school_id", "section-id,school-id", 1)
    (folder / "sections.csv").write_text(sections, encoding="utf-8")
    (folder / "schools.csv").unlink()
    found = check(sorted(folder.iterdir()), Settings.named("parentsquare")).as_dict()["issues"]
    [header] = [i for i in found if i["code"] == "header_missing_column"]
    assert header["severity"] == "fatal" and header["file"] == "sections.csv"
    assert "found 'section-id': this format uses underscores" in header["message"]
    assert "found 'school-id': this format uses underscores" in header["message"]
    assert "section-id, school-id, section_name, teacher_id" in header["message"]
    # Every other problem of the upload, in the same report.
    codes = {(i["code"], i["file"]) for i in found}
    assert ("file_missing", "schools.csv") in codes
    assert ("contact_missing", "staff.csv") in codes  # the rows of the files that could be read
