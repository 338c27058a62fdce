"""ParentSquare-style SFTP CSV (docs/reference/formats.md section 7): fixed names, exact headers.

Every `*_id` links files. Staff who can't be reached (no phone and no email) are not
imported, and neither are parents whose student is not loaded; each gets a row issue saying
so. students.csv may carry any extra attribute columns; they are kept.
"""

from rosterdrop.formats.common import enrollment, person
from rosterdrop.formats.spec import Column, FileSpec, FormatSpec, Output, RequireOneOf, Type

NAME = {"givenName": "first_name", "familyName": "last_name"}

PARENTSQUARE = FormatSpec(
    slug="parentsquare",
    title="ParentSquare-style SFTP CSV",
    files=(
        FileSpec(
            "schools.csv",
            (
                Column("school_id", required=True),
                Column("school_name", required=True),
                Column("school_phone"),
            ),
            (
                Output(
                    "orgs",
                    {"name": "school_name"},
                    key=("school_id",),
                    constants={"type": "school"},
                ),
            ),
            required=True,
        ),
        FileSpec(
            "students.csv",
            (
                Column("student_id", required=True),
                Column("school_id", required=True),
                Column("first_name", required=True),
                Column("last_name", required=True),
                Column("grade"),
                Column("email", Type.EMAIL),
                Column("language"),
            ),
            person(
                "student_id",
                {**NAME, "grades": "grade", "email": "email"},
                "student",
                school="school_id",
            ),
            required=True,
            open_columns=True,  # student attributes
        ),
        FileSpec(
            "staff.csv",
            (
                Column("staff_id", required=True),
                Column("school_id", required=True),
                Column("first_name", required=True),
                Column("last_name", required=True),
                Column("email", Type.EMAIL),
                Column("phone"),
                Column("title"),
            ),
            person(
                "staff_id",
                {**NAME, "email": "email", "phone": "phone"},
                "teacher",
                school="school_id",
            ),
            required=True,
            row_rules=(
                RequireOneOf(
                    ("phone", "email"),
                    "contact_missing",
                    "staff need a phone or an email to be reached",
                ),
            ),
        ),
        FileSpec(
            "sections.csv",
            (
                Column("section_id", required=True),
                Column("school_id", required=True),
                Column("section_name", required=True),
                Column("teacher_id"),
                Column("course_name"),
                Column("period"),
            ),
            (
                Output(
                    "classes",
                    {"title": "section_name", "schoolSourcedId": "school_id", "periods": "period"},
                    key=("section_id",),
                    constants={"classType": "scheduled"},
                ),
                enrollment(
                    "section_id",
                    "teacher_id",
                    "teacher",
                    "school_id",
                    primary="true",
                    where={"teacher_id": True},
                ),
            ),
            required=True,
        ),
        FileSpec(
            "rosters.csv",
            (Column("section_id", required=True), Column("student_id", required=True)),
            (enrollment("section_id", "student_id", "student"),),
            required=True,
        ),
        FileSpec(
            "parents.csv",
            (
                Column("parent_id", required=True),
                Column("student_id", required=True),
                Column("first_name", required=True),
                Column("last_name", required=True),
                Column("email", Type.EMAIL),
                Column("phone"),
                Column("relationship"),
                Column("language"),
            ),
            (
                # One row per parent and child: the parent's first row whose student is
                # loaded makes the user.
                Output(
                    "users",
                    {**NAME, "email": "email", "phone": "phone", "agentSourcedIds": "student_id"},
                    key=("parent_id",),
                    constants={"enabledUser": "true"},
                    deduplicate=True,
                ),
                Output(
                    "agents",
                    {"userSourcedId": "student_id", "agentSourcedId": "parent_id"},
                    key=("student_id", "parent_id"),
                    keep_extra=False,
                ),
            ),
        ),
    ),
    header_order=False,
    # A parent whose student is not loaded is not imported: one issue on the parent's row.
    strict_references={
        "users.agentSourcedIds": "a parent is imported only with a student who is loaded"
    },
)
