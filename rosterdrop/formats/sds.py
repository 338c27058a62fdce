"""Microsoft School Data Sync: v1 (US and UK headers), v2 and v2.1 (docs/reference/formats.md s. 5).

SDS v1 has no IDs for terms, courses or enrollments of their own: terms and courses are
derived from section columns, enrollments are keyed by section and person. v2.1 is
OneRoster-like but every upload is a full snapshot, IDs are case-sensitive while enums are
not, phones are E.164 and emails RFC 5322 (SDS data handling rules, s. 5.3).
"""

from rosterdrop.formats.oneroster import ROLES_FROM_ORG_LIST
from rosterdrop.formats.spec import Column, Dialect, FileSpec, FormatSpec, Output, Type

# SDS v1: Microsoft's own samples use US dates (7/1/2017) and lower-case file names exist.
V1_DIALECT = Dialect(
    date_formats=("%Y-%m-%d", "%m/%d/%Y", "%Y%m%d"),
    case_insensitive_enums=True,
    case_insensitive_names=True,
    optional_columns_may_be_absent=True,
)
V2_DIALECT = Dialect(case_insensitive_enums=True, optional_columns_may_be_absent=True)

ID = "SIS ID"
SCHOOL_ID = "School SIS ID"


def _id(name: str = ID, uk: str = "ID") -> Column:
    return Column(name, required=True, aliases=(uk,))


def _school_ref() -> Column:
    return Column(SCHOOL_ID, required=True, aliases=("School DfE Number",))


def _person(name: str, role: str, extra: tuple[Column, ...]) -> FileSpec:
    """Student.csv and Teacher.csv: a user with a role at one school."""
    return FileSpec(
        name,
        (
            _id(),
            _school_ref(),
            Column("Username", required=True),
            Column("Password", secret=True),
            Column("First Name"),
            Column("Last Name"),
            Column("Middle Name"),
            Column("Secondary Email"),
            Column("State ID"),
            Column("Status"),
            *extra,
        ),
        (
            Output(
                "users",
                {
                    "username": "Username",
                    "givenName": "First Name",
                    "familyName": "Last Name",
                    "middleName": "Middle Name",
                    "email": "Secondary Email",
                    "identifier": "Student Number" if role == "student" else "Teacher Number",
                    **({"grades": "Grade"} if role == "student" else {}),
                },
                key=(ID,),
                constants={"enabledUser": "true"},
            ),
            Output(
                "roles",
                {"userSourcedId": ID, "orgSourcedId": SCHOOL_ID},
                key=(ID, SCHOOL_ID),
                constants={"role": role, "roleType": "primary"},
                keep_extra=False,
            ),
            *(
                (
                    Output(
                        "demographics",
                        {"birthDate": "Birthdate"},
                        key=(ID,),
                        where={"Birthdate": True},
                        keep_extra=False,
                    ),
                )
                if role == "student"
                else ()
            ),
        ),
    )


def _roster(name: str, role: str) -> FileSpec:
    """StudentEnrollment.csv and TeacherRoster.csv: a person in a section."""
    return FileSpec(
        name,
        (_id("Section SIS ID", "Section ID"), _id()),
        (
            Output(
                "enrollments",
                {"classSourcedId": "Section SIS ID", "userSourcedId": ID},
                key=("Section SIS ID", ID),
                constants={"role": role},
            ),
        ),
    )


V1_FILES = (
    FileSpec(
        "School.csv",
        (
            _id(uk="DfE Number"),
            Column("Name", required=True),
            Column("School Number"),
            Column("School NCES_ID"),
            Column("State ID"),
            Column("Grade Low"),
            Column("Grade High"),
            Column("Principal SIS ID"),
            Column("Principal Name"),
            Column("Principal Secondary Email"),
            Column("Address"),
            Column("City"),
            Column("State"),
            Column("Country"),
            Column("Zip", aliases=("Postal Code",)),
            Column("Phone"),
            Column("Zone"),
        ),
        (
            Output(
                "orgs",
                {"name": "Name", "identifier": "School Number"},
                key=(ID,),
                constants={"type": "school"},
            ),
        ),
        required=True,
    ),
    FileSpec(
        "Section.csv",
        (
            _id(),
            _school_ref(),
            Column("Section Name", required=True),
            Column("Section Number"),
            Column("Term SIS ID"),
            Column("Term Name"),
            Column("Term StartDate", Type.DATE),
            Column("Term EndDate", Type.DATE),
            Column("Course SIS ID"),
            Column("Course Name"),
            Column("Course Number"),
            Column("Course Description"),
            Column("Course Subject"),
            Column("Periods"),
            Column("Status"),
        ),
        (
            Output(
                "classes",
                {
                    "title": "Section Name",
                    "classCode": "Section Number",
                    "schoolSourcedId": SCHOOL_ID,
                    "courseSourcedId": "Course SIS ID",
                    "termSourcedIds": "Term SIS ID",
                    "periods": "Periods",
                    "subjects": "Course Subject",
                },
                key=(ID,),
                constants={"classType": "scheduled"},
            ),
            Output(
                "courses",
                {
                    "title": "Course Name",
                    "courseCode": "Course Number",
                    "orgSourcedId": SCHOOL_ID,
                    "subjects": "Course Subject",
                },
                key=("Course SIS ID",),
                where={"Course SIS ID": True},
                keep_extra=False,
                deduplicate=True,
            ),
            Output(
                "academicSessions",
                {"title": "Term Name", "startDate": "Term StartDate", "endDate": "Term EndDate"},
                key=("Term SIS ID",),
                where={"Term SIS ID": True},
                constants={"type": "term"},
                keep_extra=False,
                deduplicate=True,
            ),
        ),
        required=True,
    ),
    _person(
        "Student.csv",
        "student",
        (
            Column("Student Number"),
            Column("Grade"),
            Column("Birthdate", Type.DATE),
            Column("Graduation Year"),
        ),
    ),
    _person(
        "Teacher.csv",
        "teacher",
        (Column("Teacher Number"), Column("Title"), Column("Qualification")),
    ),
    _roster("StudentEnrollment.csv", "student"),
    _roster("TeacherRoster.csv", "teacher"),
    # Guardians (SDS v1 parent contact sync): optional.
    FileSpec(
        "User.csv",
        (
            Column("Email", Type.EMAIL, required=True),
            Column("First Name", required=True),
            Column("Last Name", required=True),
            Column("Phone", Type.PHONE),
            Column(ID),
        ),
        (
            Output(
                "users",
                {
                    "email": "Email",
                    "username": "Email",
                    "givenName": "First Name",
                    "familyName": "Last Name",
                    "phone": "Phone",
                    "identifier": ID,
                },
                key=("Email",),
                constants={"enabledUser": "true"},
            ),
        ),
    ),
    FileSpec(
        "Guardianrelationship.csv",
        (
            Column(ID, required=True),
            Column("Email", Type.EMAIL, required=True),
            Column("Role", Type.ENUM, values=("parent", "guardian", "relative", "other")),
        ),
        (
            Output(
                "agents",
                {"userSourcedId": ID, "agentSourcedId": "Email"},
                key=(ID, "Email"),
            ),
        ),
    ),
)

SDS_V1 = FormatSpec(
    slug="sds-v1",
    title="Microsoft School Data Sync v1 CSV",
    files=V1_FILES,
    header_order=False,
    dialect=V1_DIALECT,
)

# SDS v2.1 enumerations (learn.microsoft.com, default list of values).
ORG_TYPES = (
    "school", "department", "district", "local", "state", "national", "departmentOfEducation",
    "ministryOfEducation", "university", "college", "campus", "adultEducation", "municipality",
    "academicTrust", "localAuthority", "region", "division", "province", "researchCenter",
    "program",
)  # fmt: skip
ROLES = (
    "principal", "chair", "professor", "researcher", "adjunct", "affiliate",
    "occupationalTherapist", "physicalTherapist", "speechTherapist", "visionTherapist",
    "paraprofessional", "specialServices", "advisor", "proctor", "nurse", "officeStaff",
    "lecturer", "itAdmin", "administrator", "teacher", "faculty", "staff", "teacherAssistant",
    "assistant", "instructor", "substitute", "coach", "alumni", "student", "other", "guardian",
    "parent", "relative", "aide", "districtAdministrator", "siteAdministrator",
)  # fmt: skip
SESSION_TYPES = ("schoolYear", "semester", "term", "gradingPeriod", "quarter")
SEXES = ("male", "female", "other", "unspecified")

ORGS = FileSpec(
    "orgs.csv",
    (
        Column("sourcedId", required=True),
        Column("name", required=True),
        Column("type", Type.ENUM, required=True, values=ORG_TYPES),
        Column("parentSourcedId"),
    ),
    (Output("orgs", {"name": "name", "type": "type", "parentSourcedId": "parentSourcedId"}),),
    required=True,
)

ENROLLMENTS = FileSpec(
    "enrollments.csv",
    (
        Column("classSourcedId", required=True),
        Column("userSourcedId", required=True),
        Column("role", Type.ENUM, required=True, values=ROLES),
    ),
    (
        Output(
            "enrollments",
            {"classSourcedId": "classSourcedId", "userSourcedId": "userSourcedId", "role": "role"},
            key=("classSourcedId", "userSourcedId"),
        ),
    ),
)

V21_FILES = (
    ORGS,
    FileSpec(
        "users.csv",
        (
            Column("sourcedId", required=True),
            Column("username", required=True),
            Column("givenName"),
            Column("familyName"),
            Column("password", secret=True),
            Column("activeDirectoryMatchId"),
            Column("email", Type.EMAIL),
            Column("phone", Type.PHONE),
            Column("sms", Type.PHONE),
        ),
        (
            Output(
                "users",
                {
                    "username": "username",
                    "givenName": "givenName",
                    "familyName": "familyName",
                    "email": "email",
                    "phone": "phone",
                    "sms": "sms",
                },
                constants={"enabledUser": "true"},
            ),
        ),
        required=True,
    ),
    FileSpec(
        "roles.csv",
        (
            Column("userSourcedId", required=True),
            Column("orgSourcedId", required=True),
            Column("role", Type.ENUM, required=True, values=ROLES),
            Column("sessionSourcedId"),
            Column("grade"),
            Column("isPrimary", Type.BOOLEAN),
            Column("roleStartDate", Type.DATE),
            Column("roleEndDate", Type.DATE),
        ),
        (
            Output(
                "roles",
                {
                    "userSourcedId": "userSourcedId",
                    "orgSourcedId": "orgSourcedId",
                    "role": "role",
                    "roleType": "isPrimary",
                    "beginDate": "roleStartDate",
                    "endDate": "roleEndDate",
                },
                key=("userSourcedId", "orgSourcedId"),  # as OneRoster 1.1 and SDS v1 key roles
                translate={"roleType": {"true": "primary", "false": "secondary"}},
            ),
        ),
        required=True,
    ),
    FileSpec(
        "classes.csv",
        (
            Column("sourcedId", required=True),
            Column("orgSourcedId", required=True),
            Column("title", required=True),
            Column("sessionSourcedIds", Type.IDS),
            Column("courseSourcedId"),
            Column("code"),
        ),
        (
            Output(
                "classes",
                {
                    "title": "title",
                    "schoolSourcedId": "orgSourcedId",
                    "termSourcedIds": "sessionSourcedIds",
                    "courseSourcedId": "courseSourcedId",
                    "classCode": "code",
                },
                constants={"classType": "scheduled"},
            ),
        ),
    ),
    ENROLLMENTS,
    FileSpec(
        "academicSessions.csv",
        (
            Column("sourcedId", required=True),
            Column("title", required=True),
            Column("type", Type.ENUM, required=True, values=SESSION_TYPES),
            Column("schoolYear", Type.YEAR, required=True),
            Column("startDate", Type.DATE, required=True),
            Column("endDate", Type.DATE, required=True),
        ),
        (
            Output(
                "academicSessions",
                {
                    "title": "title",
                    "type": "type",
                    "schoolYear": "schoolYear",
                    "startDate": "startDate",
                    "endDate": "endDate",
                },
            ),
        ),
    ),
    FileSpec(
        "courses.csv",
        (
            Column("sourcedId", required=True),
            Column("orgSourcedId", required=True),
            Column("title", required=True),
            Column("code"),
            Column("schoolYearSourcedId"),
            Column("subject"),
            Column("grade"),
        ),
        (
            Output(
                "courses",
                {
                    "orgSourcedId": "orgSourcedId",
                    "title": "title",
                    "courseCode": "code",
                    "schoolYearSourcedId": "schoolYearSourcedId",
                    "subjects": "subject",
                    "grades": "grade",
                },
            ),
        ),
    ),
    FileSpec(
        "demographics.csv",
        (
            Column("userSourcedId", required=True),
            Column("sex", Type.ENUM, values=SEXES),
            Column("birthDate", Type.DATE),
            Column("birthCity"),
            Column("birthState"),
            Column("birthCountry"),
            Column("ethnicityCodes"),
            Column("raceCodes"),
        ),
        (
            Output(
                "demographics",
                {
                    "sex": "sex",
                    "birthDate": "birthDate",
                    "cityOfBirth": "birthCity",
                    "stateOfBirthAbbreviation": "birthState",
                    "countryOfBirthCode": "birthCountry",
                },
                key=("userSourcedId",),
            ),
        ),
    ),
    FileSpec(
        "relationships.csv",
        (
            Column("userSourcedId", required=True),
            Column("relationshipUserSourcedId", required=True),
            Column("relationshipRole", Type.ENUM, required=True, values=ROLES),
        ),
        (
            Output(
                "agents",
                {"userSourcedId": "userSourcedId", "agentSourcedId": "relationshipUserSourcedId"},
                key=("userSourcedId", "relationshipUserSourcedId"),
            ),
        ),
    ),
    # Flags (iep, freeLunch, 504...) have no place in the canonical roster yet: read, checked.
    FileSpec(
        "userFlags.csv",
        (Column("userSourcedId", required=True), Column("flag", required=True)),
        (),
    ),
)

SDS_V21 = FormatSpec(
    slug="sds-v2.1",
    title="Microsoft School Data Sync v2.1 CSV",
    files=V21_FILES,
    header_order=False,
    dialect=V2_DIALECT,
)

# SDS v2 (legacy): users carry their orgs and role, there is no roles.csv.
SDS_V2 = FormatSpec(
    slug="sds-v2",
    title="Microsoft School Data Sync v2 CSV",
    files=(
        ORGS,
        FileSpec(
            "users.csv",
            (
                Column("sourcedId", required=True),
                Column("orgSourcedIds", Type.IDS, required=True),
                Column("givenName"),
                Column("familyName"),
                Column("username", required=True),
                Column("password", secret=True),
                Column("role", Type.ENUM, required=True, values=ROLES),
                Column("grade"),
            ),
            (
                Output(
                    "users",
                    {
                        "username": "username",
                        "givenName": "givenName",
                        "familyName": "familyName",
                        "grades": "grade",
                    },
                    constants={"enabledUser": "true"},
                ),
                ROLES_FROM_ORG_LIST,
            ),
            required=True,
        ),
        FileSpec(
            "classes.csv",
            (
                Column("sourcedId", required=True),
                Column("orgSourcedId", required=True),
                Column("title", required=True),
            ),
            (
                Output(
                    "classes",
                    {"title": "title", "schoolSourcedId": "orgSourcedId"},
                    constants={"classType": "scheduled"},
                ),
            ),
        ),
        ENROLLMENTS,
    ),
    header_order=False,
    dialect=V2_DIALECT,
)
