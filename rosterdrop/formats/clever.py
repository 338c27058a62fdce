"""Clever SFTP CSV (docs/reference/formats.md section 4).

Exact lower-case file names, exact headers in any order, active data only, a full snapshot
each upload. Sections name their primary teacher and up to nine co-teachers and carry their
course and term, from which courses and terms are derived: a course where Course_name is
given (one per school, name and number), a term where any of Term_name, Term_start and
Term_end is (one per name and dates). A student row may repeat once per contact; each contact
becomes a guardian user linked to the student, known by its Contact_sis_id or, without one,
by the student and the contact's name (stable from one upload to the next).
"""

from rosterdrop.formats.common import ITEM, enrollment, person
from rosterdrop.formats.spec import (
    NUMBER,
    Column,
    Derive,
    Dialect,
    FileSpec,
    FormatSpec,
    Joined,
    Output,
    Type,
)

DIALECT = Dialect(
    date_formats=("%Y-%m-%d", "%m/%d/%Y"),
    optional_columns_may_be_absent=True,
)
GRADES = (
    "InfantToddler", "Preschool", "PreKindergarten", "TransitionalKindergarten", "Kindergarten",
    *(str(n) for n in range(1, 14)), "PostGraduate", "Ungraded", "Other",
)  # fmt: skip
CONTACT_TYPES = ("parent", "guardian", "relative", "sibling", "aunt/uncle", "grandparent",
                 "family", "other")  # fmt: skip


def _contacts(contact: str | Joined, where: dict[str, bool]) -> tuple[Output, ...]:
    """A student's contact: a guardian user, their role at the student's school, the link."""
    key = contact.columns if isinstance(contact, Joined) else (contact,)
    return (
        Output(
            "users",
            {
                "givenName": "Contact_name",
                "email": "Contact_email",
                "phone": "Contact_phone",
                "username": "Contact_email",
            },
            key=key,
            where=where,
            constants={"enabledUser": "true"},
            keep_extra=False,
            deduplicate=True,
        ),
        Output(
            "roles",
            {"userSourcedId": contact, "orgSourcedId": "School_id"},
            key=(*key, "School_id"),
            where=where,
            constants={"role": "guardian", "roleType": "primary"},
            keep_extra=False,
            deduplicate=True,
        ),
        Output(
            "agents",
            {"userSourcedId": "Student_id", "agentSourcedId": contact},
            key=("Student_id", *key),
            where=where,
            keep_extra=False,
        ),
    )


# A contact without a SIS ID: the same student and contact name mean the same person.
UNNAMED_CONTACT = Joined(("Student_id", "Contact_name"), needs=("Contact_name",))

SCHOOLS = FileSpec(
    "schools.csv",
    (
        Column("School_id", required=True),
        Column("School_name", required=True),
        Column("School_number", required=True, derive=Derive("School_id")),
        *(
            Column(c)
            for c in (
                "State_id",
                "Low_grade",
                "High_grade",
                "Principal",
                "Principal_email",
                "School_address",
                "School_city",
                "School_state",
                "School_zip",
                "School_phone",
            )
        ),
    ),
    (
        Output(
            "orgs",
            {"name": "School_name", "identifier": "School_number"},
            key=("School_id",),
            constants={"type": "school"},
        ),
    ),
    required=True,
    extra_prefix="ext.",
)

STUDENTS = FileSpec(
    "students.csv",
    (
        Column("School_id", required=True),
        Column("Student_id", required=True),
        Column("Student_number"),
        Column("State_id"),
        Column("Last_name", required=True),
        Column("Middle_name"),
        Column("First_name", required=True),
        Column("Grade", Type.ENUM, values=GRADES),
        Column("Gender", Type.ENUM, values=("M", "F", "X")),
        Column("Graduation_year", Type.YEAR),
        Column("DOB", Type.DATE),
        *(
            Column(c)
            for c in (
                "Race",
                "Hispanic_Latino",
                "Home_language",
                "Ell_status",
                "Frl_status",
                "IEP_status",
                "Student_street",
                "Student_city",
                "Student_state",
                "Student_zip",
            )
        ),
        Column("Student_email", Type.EMAIL),
        Column("Contact_relationship"),
        Column("Contact_type", Type.ENUM, values=CONTACT_TYPES),
        Column("Contact_name"),
        Column("Contact_phone"),
        Column("Contact_phone_type"),
        Column("Contact_email", Type.EMAIL),
        Column("Contact_sis_id"),
        Column("Username"),
        Column("Password", secret=True),
        Column("Unweighted_gpa"),
        Column("Weighted_gpa"),
    ),
    (
        *person(
            "Student_id",
            {
                "givenName": "First_name",
                "middleName": "Middle_name",
                "familyName": "Last_name",
                "identifier": "Student_number",
                "email": "Student_email",
                "username": "Username",
                "grades": "Grade",
            },
            "student",
            school="School_id",
            repeated=True,
        ),
        Output(
            "demographics",
            {"birthDate": "DOB", "sex": "Gender"},
            key=("Student_id",),
            translate={"sex": {"M": "male", "F": "female", "X": "other"}},
            keep_extra=False,
            deduplicate=True,
        ),
        # One contact per row.
        *_contacts("Contact_sis_id", {"Contact_sis_id": True}),
        *_contacts(UNNAMED_CONTACT, {"Contact_sis_id": False, "Contact_name": True}),
    ),
    required=True,
    extra_prefix="ext.",
)

TEACHERS = FileSpec(
    "teachers.csv",
    (
        Column("School_id", required=True),
        Column("Teacher_id", required=True),
        Column("Teacher_number"),
        Column("State_teacher_id"),
        Column("Teacher_email", Type.EMAIL),
        Column("First_name", required=True),
        Column("Middle_name"),
        Column("Last_name", required=True),
        Column("Title"),
        Column("Username"),
        Column("Password", secret=True),
    ),
    person(
        "Teacher_id",
        {
            "givenName": "First_name",
            "middleName": "Middle_name",
            "familyName": "Last_name",
            "identifier": "Teacher_number",
            "email": "Teacher_email",
            "username": "Username",
        },
        "teacher",
        school="School_id",
        repeated=True,  # a teacher at several schools has one row per school
    ),
    required=True,
    extra_prefix="ext.",
)

STAFF = FileSpec(
    "staff.csv",
    (
        Column("School_id", required=True),
        Column("Staff_id", required=True),
        Column("Staff_email", Type.EMAIL, required=True),
        Column("First_name", required=True),
        Column("Last_name", required=True),
        Column("Department"),
        Column("Title"),
        Column("Username"),
        Column("Password", secret=True),
        Column("Role"),
    ),
    person(
        "Staff_id",
        {
            "givenName": "First_name",
            "familyName": "Last_name",
            "email": "Staff_email",
            "username": "Username",
        },
        "administrator",
        school="School_id",
        repeated=True,
    ),
    extra_prefix="ext.",
)

# Courses and terms are implied by section columns (Clever: a course needs Course_name, a term
# any of its name and dates).
COURSE = Joined(("School_id", "Course_name", "Course_number"), needs=("Course_name",))
TERM_COLUMNS = ("Term_name", "Term_start", "Term_end")
TERM = Joined(TERM_COLUMNS, needs=TERM_COLUMNS)

SECTIONS = FileSpec(
    "sections.csv",
    (
        Column("School_id", required=True),
        Column("Section_id", required=True),
        Column("Teacher_id", required=True),
        Column(f"Teacher_{NUMBER}_id", numbered=(2, 10)),
        Column("Name"),
        Column("Section_number"),
        Column("Grade", Type.ENUM, values=GRADES),
        Column("Course_name"),
        Column("Course_number"),
        Column("Course_description"),
        Column("Period"),
        Column("Subject"),
        Column("Term_name"),
        Column("Term_start", Type.DATE),
        Column("Term_end", Type.DATE),
    ),
    (
        Output(
            "classes",
            {
                "title": "Name",
                "classCode": "Section_number",
                "grades": "Grade",
                "periods": "Period",
                "subjects": "Subject",
                "schoolSourcedId": "School_id",
                "courseSourcedId": COURSE,
                "termSourcedIds": TERM,
            },
            key=("Section_id",),
            constants={"classType": "scheduled"},
        ),
        Output(
            "courses",
            {"title": "Course_name", "courseCode": "Course_number", "orgSourcedId": "School_id"},
            key=COURSE.columns,
            where_any=COURSE.needs,
            keep_extra=False,
            deduplicate=True,
        ),
        Output(
            "academicSessions",
            {"title": "Term_name", "startDate": "Term_start", "endDate": "Term_end"},
            key=TERM.columns,
            where_any=TERM.needs,
            constants={"type": "term"},
            keep_extra=False,
            deduplicate=True,
        ),
        enrollment("Section_id", "Teacher_id", "teacher", "School_id", primary="true"),
        enrollment(
            "Section_id",
            ITEM,
            "teacher",
            "School_id",
            key=("Section_id", ITEM),
            primary="false",
            unpivot=(f"Teacher_{NUMBER}_id",),
        ),
    ),
    required=True,
    extra_prefix="ext.",
)

ENROLLMENTS = FileSpec(
    "enrollments.csv",
    (
        Column("School_id", required=True),
        Column("Section_id", required=True),
        Column("Student_id", required=True),
    ),
    (enrollment("Section_id", "Student_id", "student", "School_id"),),
    required=True,
)

CLEVER = FormatSpec(
    slug="clever",
    title="Clever SFTP CSV",
    files=(SCHOOLS, STUDENTS, TEACHERS, STAFF, SECTIONS, ENROLLMENTS),
    header_order=False,
    dialect=DIALECT,
    ignored_files=("admins.csv",),
)
