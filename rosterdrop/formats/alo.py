"""ALO-style seven-file zip (docs/reference/formats.md section 7).

One zip with exactly Manifest.csv and six data files, a full overwrite of the current
school year. The manifest names the district, which must be the receiving account. The
problems ALO lists refuse the whole upload; any other row with an error is left out and the
rest applied. In StaffEnrollments a blank Class ID means school-level staff, and blank
Class ID and School ID district-level staff. A student's `Teacher ID` must be a Staff `ID`.
StudentEnrollments and StaffEnrollments number their IDs each for itself: separate key
spaces. A staff member may teach at a school and be school-level staff there (two roles).
The guide's optional columns (`Student Number`, `Primary ID`) may be left out; an email that
is not an address or a grade that is not one (PK, K, 1-12) skips its row.
"""

from rosterdrop.formats.common import enrollment, person
from rosterdrop.formats.spec import (
    Column,
    Dialect,
    FileSpec,
    FormatSpec,
    Link,
    Manifest,
    Output,
    Type,
)

NAME = {"givenName": "First Name", "familyName": "Last Name"}
GRADES = ("PK", "K", *(str(n) for n in range(1, 13)))
FILES = ("Schools.csv", "Classes.csv", "Students.csv", "Staff.csv")

ALO = FormatSpec(
    slug="alo",
    title="ALO-style zip",
    files=(
        FileSpec(
            "Schools.csv",
            (Column("ID", required=True), Column("Name", required=True)),
            (Output("orgs", {"name": "Name"}, key=("ID",), constants={"type": "school"}),),
            unique=("Name",),
        ),
        FileSpec(
            "Classes.csv",
            (
                Column("ID", required=True),
                Column("Name", required=True),
                Column("School ID", required=True),
                Column("Grade"),
            ),
            (
                Output(
                    "classes",
                    {"title": "Name", "schoolSourcedId": "School ID", "grades": "Grade"},
                    key=("ID",),
                    constants={"classType": "scheduled"},
                ),
            ),
            unique=("Name",),
        ),
        FileSpec(
            "Students.csv",
            (
                Column("ID", required=True),
                Column("First Name", required=True),
                Column("Last Name", required=True),
                Column("Grade", Type.ENUM, required=True, values=GRADES),
                Column("School ID", required=True),
                Column("Teacher ID"),
                Column("Student Number"),
            ),
            person(
                "ID",
                {**NAME, "grades": "Grade", "identifier": "Student Number"},
                "student",
                school="School ID",
            ),
            # The student's teacher: kept as metadata, but it must be one of the staff.
            links=(Link("Teacher ID", "Staff.csv", "ID"),),
        ),
        FileSpec(
            "Staff.csv",
            (
                Column("ID", required=True),
                Column("First Name", required=True),
                Column("Last Name", required=True),
                Column("Email", Type.EMAIL, required=True),
                Column("Primary ID"),  # kept as sent (metadata)
            ),
            person("ID", {**NAME, "email": "Email", "username": "Email"}, "teacher"),
        ),
        FileSpec(
            "StudentEnrollments.csv",
            (
                Column("ID", required=True),
                Column("Student ID", required=True),
                Column("Class ID", required=True),
            ),
            (enrollment("Class ID", "Student ID", "student", key=("ID",)),),
        ),
        FileSpec(
            "StaffEnrollments.csv",
            (
                Column("ID", required=True),
                Column("Staff ID", required=True),
                Column("Class ID"),
                Column("School ID"),
            ),
            (
                enrollment(
                    "Class ID",
                    "Staff ID",
                    "teacher",
                    "School ID",
                    key=("ID",),
                    where={"Class ID": True},
                    key_space="staff",
                ),
                Output(
                    "roles",
                    {"userSourcedId": "Staff ID", "orgSourcedId": "School ID"},
                    key=("Staff ID", "School ID"),
                    where={"Class ID": True, "School ID": True},
                    constants={"role": "teacher", "roleType": "primary"},
                    keep_extra=False,
                    deduplicate=True,
                ),
                Output(
                    "roles",
                    {"userSourcedId": "Staff ID", "orgSourcedId": "School ID"},
                    key=("Staff ID", "School ID"),
                    where={"Class ID": False, "School ID": True},
                    constants={"role": "siteAdministrator", "roleType": "primary"},
                    keep_extra=False,
                    key_space="siteAdministrator",
                ),
                # District level: a role at no school.
                Output(
                    "roles",
                    {"userSourcedId": "Staff ID"},
                    key=("Staff ID",),
                    where={"Class ID": False, "School ID": False},
                    constants={"role": "districtAdministrator", "roleType": "primary"},
                    keep_extra=False,
                ),
            ),
        ),
    ),
    manifest=Manifest(
        "Manifest.csv",
        columns=("District ID", "District Name", "School Year"),
        required_properties=("District ID", "School Year"),
        account_property="District ID",
    ),
    all_files_required=True,
    zip_required=True,
    dialect=Dialect(optional_columns_may_be_absent=True),
    fatal={
        "file_unknown": (),
        "file_misnamed": (),
        "header_missing_column": (),
        "header_unknown_column": (),
        "required_missing": (),
        "duplicate_id": FILES,
        "duplicate_value": FILES,
        "reference_missing": (),
    },
)
