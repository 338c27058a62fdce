"""Clever, Apple School Manager, ParentSquare-style and ALO-style: the fixtures in
tests/fixtures (tests/fixtures/generate.py) and one broken variant per rule of each format."""

import io
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest
from helpers import edit, issues, rows, write

from rosterdrop.formats.apple import APPLE_SCHOOL_MANAGER
from rosterdrop.ingest.columns import LINE
from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.read import read_table
from rosterdrop.ingest.reader import expand
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

FIXTURES = Path(__file__).parent / "fixtures"


def validate(path: Path, fmt: str | None = None, account: str = "") -> dict:
    checked = check(expand(path), Settings.named(fmt, account))
    return {**checked.as_dict(), "reason": checked.reason}


def where(issue: dict) -> tuple:
    return issue["severity"], issue["file"], issue["line"]


@pytest.fixture
def folder(tmp_path, request) -> Path:
    """A writable copy of one format's fixture folder."""
    target = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, target)
    return target


def unzip(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n).decode("utf-8") for n in z.namelist()}


def rezip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def change_line(data: str, line: int, old: str, new: str) -> str:
    lines = data.split("\n")
    assert old in lines[line - 1], lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    return "\n".join(lines)


# --- Clever ---------------------------------------------------------------------------------

CLEVER = pytest.mark.parametrize("folder", ["clever"], indirect=True)


def test_clever_fixture_imports_with_co_teachers_and_contacts():
    result = validate(FIXTURES / "clever")
    assert result["format"] == "clever" and "schools.csv" in result["reason"]
    assert result["issues"] == []  # columns in another order are fine in Clever
    counts = result["counts"]
    assert (counts["orgs"], counts["classes"], counts["demographics"]) == (3, 30, 300)
    # 1200 student enrollments + 30 primary teachers + 10 co-teachers (Teacher_2_id/_3_id)
    assert counts["enrollments"] == 1240
    # Terms and courses derived from section columns.
    assert (counts["academicSessions"], counts["courses"]) == (1, 6)
    # One guardian link per contact row: 300 first contacts + 30 second contacts.
    assert counts["agents"] == 330


@CLEVER
def test_clever_file_names_are_exact(folder):
    (folder / "schools.csv").rename(folder / "Schools.csv")
    [issue] = issues(validate(folder, "clever"), "file_missing")
    assert issue["severity"] == "fatal" and "Schools.csv" in issue["message"]


@CLEVER
def test_clever_headers_are_exact(folder):
    table = rows(folder / "enrollments.csv")
    table[0][table[0].index("Student_id")] = "student_id"
    write(folder / "enrollments.csv", table)
    [issue] = issues(validate(folder, "clever"), "header_missing_column")
    assert where(issue) == ("fatal", "enrollments.csv", 1) and "case-sensitive" in issue["message"]


@CLEVER
def test_clever_unknown_co_teacher_skips_that_enrollment(folder):
    edit(folder / "sections.csv", 5, "Teacher_2_id", "T9999")
    result = validate(folder, "clever")
    [issue] = issues(result, "reference_missing")
    assert where(issue) == ("error", "sections.csv", 5) and issue["value"] == "T9999"
    assert result["counts"]["enrollments"] == 1239


@CLEVER
def test_clever_bad_birth_date_is_cleared(folder):
    edit(folder / "students.csv", 3, "DOB", "31/31/2014")
    [issue] = issues(validate(folder, "clever"), "date_invalid")
    assert where(issue) == ("warning", "students.csv", 3) and issue["column"] == "DOB"


@CLEVER
def test_clever_student_without_name_is_skipped(folder):
    edit(folder / "students.csv", 4, "Last_name", "")
    [issue] = issues(validate(folder, "clever"), "required_missing")
    assert where(issue) == ("error", "students.csv", 4)


def accepted_keys(path: Path, entity: str) -> set[str]:
    checked = check(expand(path), Settings.named("clever"))
    assert not checked.fatal
    return set(checked.records.accepted[entity]["_key"].to_list())


@CLEVER
def test_clever_contacts_without_sis_id_are_kept_under_a_stable_key(folder):
    table = rows(folder / "students.csv")
    sis = table[0].index("Contact_sis_id")
    for row in table[1:]:
        if row[table[0].index("Contact_name")] == "Second Contact":
            row[sis] = ""
    write(folder / "students.csv", table)
    result = validate(folder, "clever")
    assert result["issues"] == []
    assert result["counts"]["agents"] == 330  # as many links as with SIS IDs
    users = accepted_keys(folder, "users")
    assert "000001:Second Contact" in users and "C000001" not in users
    assert "G00000" in users  # contacts with a SIS ID keep it
    assert accepted_keys(folder, "agents") >= {"000001:000001:Second Contact"}
    # Sent again in another row order, the same keys: nothing would be removed and re-added.
    write(folder / "students.csv", [table[0], *reversed(table[1:])])
    assert accepted_keys(folder, "users") == users


@CLEVER
def test_clever_terms_and_courses_follow_clevers_rules(folder):
    table = rows(folder / "sections.csv")
    col = {name: i for i, name in enumerate(table[0])}
    table[2][col["Term_start"]] = "2026-09-01"  # same name, other dates: another term
    table[3][col["Term_name"]] = ""  # dates alone make a term (the Fall 2026 dates)
    table[4][col["Term_name"]] = table[4][col["Term_start"]] = table[4][col["Term_end"]] = ""
    table[5][col["Course_number"]] = "MUS-ADV"  # same school and name, another number
    table[6][col["Course_name"]] = ""  # a number alone makes no course
    write(folder / "sections.csv", table)
    result = validate(folder, "clever")
    assert result["issues"] == []
    terms = accepted_keys(folder, "academicSessions")
    assert terms == {
        "Fall 2026:2026-08-24:2026-12-18",
        "Fall 2026:2026-09-01:2026-12-18",
        ":2026-08-24:2026-12-18",
    }
    assert result["counts"]["classes"] == 30  # a class with no term or course is still a class
    assert result["counts"]["courses"] == 7


@CLEVER
def test_clever_term_name_with_a_comma_stays_one_term(folder):
    """A derived ID is listed in termSourcedIds: a comma in the name must not split it."""
    table = rows(folder / "sections.csv")
    col = {name: i for i, name in enumerate(table[0])}
    for row in table[1:]:
        row[col["Term_name"]] = "Fall, 2026"
        row[col["Course_name"]] = row[col["Course_name"]] + ", 100%"
    write(folder / "sections.csv", table)
    result = validate(folder, "clever")
    assert result["issues"] == []
    assert (result["counts"]["classes"], result["counts"]["enrollments"]) == (30, 1240)
    assert accepted_keys(folder, "academicSessions") == {"Fall%2C 2026:2026-08-24:2026-12-18"}
    assert all("%2C" in key and "%25" in key for key in accepted_keys(folder, "courses"))


# --- Apple School Manager ---------------------------------------------------------------------

ASM = FIXTURES / "apple-school-manager" / "asm.zip"


def test_asm_fixture_imports():
    result = validate(ASM)
    assert result["format"] == "apple-school-manager"
    assert result["issues"] == []
    counts = result["counts"]
    # 300 students + 15 staff; one staff member at two locations (location_id_2).
    assert (counts["users"], counts["roles"], counts["enrollments"]) == (315, 316, 1240)


def test_asm_semicolon_separator_reads_the_same(tmp_path):
    files = {n: d.replace(",", ";") for n, d in unzip(ASM).items()}
    assert validate(rezip(tmp_path / "asm.zip", files))["counts"] == validate(ASM)["counts"]


def test_asm_loose_files_are_refused(tmp_path):
    for name, data in unzip(ASM).items():
        (tmp_path / name).write_text(data)
    [issue] = validate(tmp_path, "apple-school-manager")["issues"]
    assert (issue["code"], issue["severity"]) == ("zip_required", "fatal")


def test_asm_any_broken_reference_fails_the_whole_upload(tmp_path):
    files = unzip(ASM)
    files["rosters.csv"] = change_line(files["rosters.csv"], 7, ",000", ",999")
    result = validate(rezip(tmp_path / "asm.zip", files))
    [issue] = issues(result, "reference_missing")
    assert where(issue) == ("fatal", "rosters.csv", 7)
    assert "nothing was applied" in issue["message"]


def _asm_escaped(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """ASM's backslash escapes: a quote and a separator in names, a line break in a class name."""
    files = unzip(ASM)
    students = change_line(
        files["students.csv"], 3, "Éloïse,,Nuñez", 'Éloïse \\"Lulu\\",,Nuñez\\, Jr.'
    )
    files["students.csv"] = students
    files["classes.csv"] = change_line(files["classes.csv"], 2, "English 1", "English 1\\\nHonors")
    return rezip(tmp_path / "asm.zip", files), files


def test_asm_backslash_escapes_are_read_with_their_exact_lines(tmp_path):
    _, files = _asm_escaped(tmp_path)
    dialect = APPLE_SCHOOL_MANAGER.file("classes.csv").dialect
    for name, line, column, value in [
        ("students.csv", 3, "first_name", 'Éloïse "Lulu"'),
        ("students.csv", 3, "last_name", "Nuñez, Jr."),
        ("students.csv", 4, "first_name", "Mateo"),
        ("classes.csv", 2, "class_display_name", "English 1\nHonors"),
        ("classes.csv", 4, "class_display_name", "Science 2"),  # lines 2-3 are one row
    ]:
        chunks = iter([files[name].encode()])
        table = read_table(name, chunks, dialect.delimiters, dialect.escapechar)
        frame = pl.concat(list(table.batches))
        assert frame.filter(pl.col(LINE) == line)[column].to_list() == [value], (name, line)
        assert table.findings == []
    # The same rows whichever way a piece is parsed: escape-free pieces still go the fast way.
    text = files["students.csv"].encode()
    head, rest = text.split(b"\n", 1)
    chunks = [head + b"\n"] + [line + b"\n" for line in rest.rstrip(b"\n").split(b"\n")]
    piecewise = pl.concat(list(read_table("students.csv", iter(chunks), ",;", "\\").batches))
    whole = pl.concat(list(read_table("students.csv", iter([text]), ",;", "\\").batches))
    assert piecewise.equals(whole) and piecewise.height == 300


def test_asm_escaped_line_break_keeps_later_lines_exact(tmp_path):
    files = _asm_escaped(tmp_path)[1]
    # Physical line 6 is the fifth class, because the first one spans lines 2 and 3.
    files["classes.csv"] = change_line(files["classes.csv"], 6, ",001,Art", ",099,Art")
    result = validate(rezip(tmp_path / "broken.zip", files))
    found = [i for i in issues(result, "reference_missing") if i["file"] == "classes.csv"]
    assert {where(i) for i in found} == {("fatal", "classes.csv", 6)}
    assert found[0]["value"] == "099" and found[0]["column"] == "location_id"


def test_asm_escaped_values_are_stored_as_written(district, tmp_path):
    district.format = "apple-school-manager"
    district.save()
    sync = import_path(district, _asm_escaped(tmp_path)[0])
    assert sync.status == "applied", sync.message
    student = records(district, "users").get(sourced_id="000002")
    assert (student.data["givenName"], student.data["familyName"]) == (
        'Éloïse "Lulu"',
        "Nuñez, Jr.",
    )
    course = records(district, "classes").get(sourced_id="00001")
    assert course.data["title"] == "English 1\nHonors"


# --- ParentSquare-style ---------------------------------------------------------------------

PSQ = pytest.mark.parametrize("folder", ["parentsquare"], indirect=True)


def test_parentsquare_fixture_keeps_student_attributes():
    result = validate(FIXTURES / "parentsquare")
    assert result["format"] == "parentsquare"
    assert result["issues"] == []  # homeroom, bus_route: attribute columns, no warning
    assert result["counts"]["agents"] == 300


@PSQ
def test_parentsquare_staff_without_phone_or_email_is_not_imported(folder):
    before = validate(folder)["counts"]["users"]
    edit(folder / "staff.csv", 6, "email", "")
    result = validate(folder)
    [issue] = issues(result, "contact_missing")
    assert where(issue) == ("error", "staff.csv", 6) and "phone or email" in issue["message"]
    assert result["counts"]["users"] == before - 1


@PSQ
def test_parentsquare_parent_of_a_student_not_loaded_is_not_imported(folder):
    before = validate(folder)["counts"]["users"]
    edit(folder / "parents.csv", 4, "student_id", "999999")
    result = validate(folder)
    # One issue for the row, naming the district's column; not a second one for the link.
    [issue] = result["issues"]
    assert where(issue) == ("error", "parents.csv", 4)
    assert (issue["code"], issue["column"], issue["value"]) == (
        "reference_missing",
        "student_id",
        "999999",
    )
    assert "a parent is imported only with a student who is loaded" in issue["message"]
    assert result["counts"]["users"] == before - 1


@PSQ
def test_parentsquare_parent_with_one_child_not_loaded_is_imported_with_the_other(folder, district):
    """G00286 has two children (lines 288 and 289): the first naming a student who is not
    loaded must not lose the parent, only that guardian link."""
    before = validate(folder)["counts"]
    edit(folder / "parents.csv", 288, "student_id", "999999")
    result = validate(folder)
    [issue] = result["issues"]
    assert where(issue) == ("error", "parents.csv", 288)
    assert (issue["column"], issue["value"]) == ("student_id", "999999")
    assert "guardian link was skipped" in issue["message"]
    assert result["counts"]["users"] == before["users"]
    assert result["counts"]["agents"] == before["agents"] - 1
    district.format = "parentsquare"
    district.save()
    assert import_path(district, folder).status == "applied_with_errors"
    parent = records(district, "users").get(sourced_id="G00286")
    assert parent.data["agentSourcedIds"] == "000288"  # made from the row of the child it has


# --- ALO-style --------------------------------------------------------------------------------

ALO = FIXTURES / "alo" / "springfield.zip"


def alo_variant(tmp_path: Path, **changes) -> Path:
    files = unzip(ALO)
    for name, data in changes.items():
        name = name.replace("_", ".")
        if data is None:
            files.pop(name)
        else:
            files[name] = data
    return rezip(tmp_path / "upload.zip", files)


def test_alo_fixture_imports_for_its_account():
    result = validate(ALO, account="springfield")
    assert result["format"] == "alo" and "Manifest.csv" in result["reason"]
    assert result["issues"] == []
    # 300 students, 15 teachers, a principal (school level) and a superintendent (district).
    assert result["counts"]["users"] == 317
    # Students, teachers at each school they teach at, the principal, the superintendent.
    assert result["counts"]["roles"] == 316


def test_alo_manifest_of_another_district_is_refused():
    [issue] = validate(ALO, "alo", account="shelbyville")["issues"]
    assert (issue["code"], issue["file"], issue["severity"]) == (
        "manifest_account_mismatch",
        "Manifest.csv",
        "fatal",
    )


def test_alo_missing_file_is_fatal(tmp_path):
    [issue] = validate(alo_variant(tmp_path, Staff_csv=None), "alo")["issues"]
    assert (issue["code"], issue["severity"]) == ("file_missing", "fatal")


def test_alo_extra_file_is_fatal(tmp_path):
    result = validate(alo_variant(tmp_path, notes_txt="hello"), "alo")
    [issue] = issues(result, "file_unknown")
    assert issue["severity"] == "fatal"


def test_alo_duplicate_school_name_is_fatal(tmp_path):
    schools = unzip(ALO)["Schools.csv"]
    schools = change_line(schools, 3, "O'Connor Middle School", "Lincoln High School")
    [issue] = issues(validate(alo_variant(tmp_path, Schools_csv=schools), "alo"), "duplicate_value")
    assert where(issue) == ("fatal", "Schools.csv", 4) and "line 3" in issue["message"]


def test_alo_student_listed_twice_is_fatal(tmp_path):
    students = unzip(ALO)["Students.csv"].rstrip("\n").split("\n")
    students.append(students[5])
    data = "\n".join(students) + "\n"
    found = issues(validate(alo_variant(tmp_path, Students_csv=data), "alo"), "duplicate_id")
    assert {where(i) for i in found} == {("fatal", "Students.csv", len(students))}


def test_alo_ids_that_do_not_map_across_files_are_fatal(tmp_path):
    data = change_line(unzip(ALO)["StudentEnrollments.csv"], 10, ",000", ",998")
    result = validate(alo_variant(tmp_path, StudentEnrollments_csv=data), "alo")
    [issue] = issues(result, "reference_missing")
    assert where(issue) == ("fatal", "StudentEnrollments.csv", 10)


@pytest.mark.parametrize("teacher", ["T9999", "000001"])  # no one; a student, not a staff ID
def test_alo_student_teacher_must_be_one_of_the_staff(tmp_path, teacher):
    data = change_line(unzip(ALO)["Students.csv"], 5, ",T0001", f",{teacher}")
    result = validate(alo_variant(tmp_path, Students_csv=data), "alo")
    [issue] = result["issues"]
    assert (issue["code"], issue["column"], issue["value"]) == (
        "reference_missing",
        "Teacher ID",
        teacher,
    )
    assert where(issue) == ("fatal", "Students.csv", 5) and "Staff.csv" in issue["message"]


def test_alo_missing_required_field_is_fatal(tmp_path):
    data = change_line(unzip(ALO)["Staff.csv"], 2, "t001@springfield.example.org", "")
    [issue] = issues(validate(alo_variant(tmp_path, Staff_csv=data), "alo"), "required_missing")
    assert where(issue) == ("fatal", "Staff.csv", 2)


def test_alo_other_row_errors_are_left_out_and_the_rest_applied(tmp_path):
    enrollments = unzip(ALO)["StudentEnrollments.csv"].rstrip("\n").split("\n")
    enrollments.append(enrollments[8])  # the same enrollment ID twice: not on ALO's fatal list
    data = "\n".join(enrollments) + "\n"
    result = validate(alo_variant(tmp_path, StudentEnrollments_csv=data), "alo")
    [issue] = issues(result, "duplicate_id")
    assert where(issue) == ("error", "StudentEnrollments.csv", len(enrollments))
    assert result["counts"]["enrollments"] == 1240


def test_alo_not_a_zip_is_fatal(tmp_path):
    with zipfile.ZipFile(io.BytesIO(ALO.read_bytes())) as z:
        z.extractall(tmp_path / "loose")
    [issue] = validate(tmp_path / "loose", "alo")["issues"]
    assert (issue["code"], issue["severity"]) == ("zip_required", "fatal")
