"""Apple School Manager SFTP templates (docs/reference/formats.md section 6).

Six files in one zip, `,` or `;` separated, exact headers. People may belong to several
locations (location_id_2 .. location_id_999) and classes name up to fifteen instructors.
Every reference must resolve: one broken reference fails the whole upload. A literal quote,
separator or line break inside a value is escaped with a backslash.
"""

from rosterdrop.formats.common import ITEM, enrollment, person
from rosterdrop.formats.spec import NUMBER, Column, Dialect, FileSpec, FormatSpec, Output

LOCATIONS = ("location_id", f"location_id_{NUMBER}")


def _people(name: str, role: str) -> FileSpec:
    student = role == "student"
    return FileSpec(
        name,
        (
            Column("person_id", required=True),
            Column("person_number"),
            Column("first_name", required=True),
            Column("middle_name"),
            Column("last_name", required=True),
            *((Column("grade_level"),) if student else ()),
            Column("email_address"),
            Column("sis_username"),
            *((Column("password_policy"),) if student else ()),
            Column("location_id", required=True),
            Column(f"location_id_{NUMBER}", numbered=(2, 999)),
        ),
        person(
            "person_id",
            {
                "identifier": "person_number",
                "givenName": "first_name",
                "middleName": "middle_name",
                "familyName": "last_name",
                "email": "email_address",
                "username": "sis_username",
                **({"grades": "grade_level"} if role == "student" else {}),
            },
            role,
            schools=LOCATIONS,
        ),
        required=True,
    )


APPLE_SCHOOL_MANAGER = FormatSpec(
    slug="apple-school-manager",
    title="Apple School Manager SFTP CSV",
    files=(
        FileSpec(
            "locations.csv",
            (Column("location_id", required=True), Column("location_name", required=True)),
            (
                Output(
                    "orgs",
                    {"name": "location_name"},
                    key=("location_id",),
                    constants={"type": "school"},
                ),
            ),
            required=True,
        ),
        _people("students.csv", "student"),
        _people("staff.csv", "teacher"),
        FileSpec(
            "courses.csv",
            (
                Column("course_id", required=True),
                Column("course_number"),
                Column("course_name"),
                Column("location_id", required=True),
            ),
            (
                Output(
                    "courses",
                    {
                        "title": "course_name",
                        "courseCode": "course_number",
                        "orgSourcedId": "location_id",
                    },
                    key=("course_id",),
                ),
            ),
            required=True,
        ),
        FileSpec(
            "classes.csv",
            (
                Column("class_id", required=True),
                Column("class_number"),
                Column("course_id", required=True),
                Column("instructor_id"),
                Column(f"instructor_id_{NUMBER}", numbered=(2, 15)),
                Column("location_id", required=True),
                Column("class_display_name"),
            ),
            (
                Output(
                    "classes",
                    {
                        "title": "class_display_name",
                        "classCode": "class_number",
                        "courseSourcedId": "course_id",
                        "schoolSourcedId": "location_id",
                    },
                    key=("class_id",),
                    constants={"classType": "scheduled"},
                ),
                enrollment(
                    "class_id",
                    "instructor_id",
                    "teacher",
                    "location_id",
                    primary="true",
                    where={"instructor_id": True},
                ),
                enrollment(
                    "class_id",
                    ITEM,
                    "teacher",
                    "location_id",
                    key=("class_id", ITEM),
                    primary="false",
                    unpivot=(f"instructor_id_{NUMBER}",),
                ),
            ),
            required=True,
        ),
        FileSpec(
            "rosters.csv",
            (
                Column("roster_id", required=True),
                Column("class_id", required=True),
                Column("student_id", required=True),
            ),
            (enrollment("class_id", "student_id", "student", key=("roster_id",)),),
            required=True,
        ),
    ),
    # `\"`, `\,` and an escaped line break stand for themselves inside a value.
    dialect=Dialect(delimiters=",;", escapechar="\\"),
    fatal={"reference_missing": ()},
    zip_required=True,
)
