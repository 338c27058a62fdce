"""OneRoster CSV 1.0, 1.1 and 1.2 (docs/reference/formats.md sections 1-3), as data.

Only the rostering files are mapped; gradebook and resource files are recognised and left alone.
"""

from rosterdrop.formats.spec import (
    Column,
    Derive,
    FileSpec,
    FormatSpec,
    Manifest,
    Mode,
    Output,
    Type,
)

ORG_TYPES = ("department", "school", "district", "local", "state", "national")
SESSION_TYPES = ("gradingPeriod", "semester", "schoolYear", "term")
CLASS_TYPES = ("homeroom", "scheduled")
USER_ROLES_11 = (
    "administrator", "aide", "guardian", "parent", "proctor", "relative", "student", "teacher",
)  # fmt: skip
ENROLLMENT_ROLES = ("administrator", "proctor", "student", "teacher")
ROLES_12 = (
    "aide", "counselor", "districtAdministrator", "guardian", "parent", "principal", "proctor",
    "relative", "siteAdministrator", "student", "systemAdministrator", "teacher",
)  # fmt: skip
STATUSES = ("active", "tobedeleted")
RACE_FLAGS = (
    "americanIndianOrAlaskaNative",
    "asian",
    "blackOrAfricanAmerican",
    "nativeHawaiianOrOtherPacificIslander",
    "white",
    "demographicRaceTwoOrMoreRaces",
    "hispanicOrLatinoEthnicity",
)

# Gradebook and resource files: part of OneRoster, not of a roster. Named so they are not
# reported as unknown files.
NON_ROSTER_FILES_11 = (
    "categories.csv",
    "classResources.csv",
    "courseResources.csv",
    "lineItems.csv",
    "resources.csv",
    "results.csv",
)
NON_ROSTER_FILES_12 = NON_ROSTER_FILES_11 + (
    "userProfiles.csv",
    "userResources.csv",
    "scoreScales.csv",
    "lineItemScoreScales.csv",
    "resultScoreScales.csv",
    "lineItemLearningObjectiveIds.csv",
    "resultLearningObjectiveIds.csv",
)


def _head() -> tuple[Column, ...]:
    """The three columns every OneRoster file starts with."""
    return (
        Column("sourcedId", Type.ID, required=True),
        Column("status", Type.ENUM, values=STATUSES, delta_only=True),
        Column("dateLastModified", Type.DATETIME, delta_only=True),
    )


def _same(*names: str) -> dict[str, str]:
    """Canonical fields that keep their OneRoster column name."""
    return {n: n for n in names}


def _file(name: str, columns: tuple[Column, ...], *outputs: Output) -> FileSpec:
    return FileSpec(name=name, columns=_head() + columns, outputs=outputs, status_column="status")


def _data_columns(file: FileSpec) -> tuple[str, ...]:
    return tuple(c.name for c in file.columns if not c.delta_only and c.name != "sourcedId")


def _plain(name: str, entity: str, columns: tuple[Column, ...]) -> FileSpec:
    """A file that maps one to one onto a canonical entity of the same shape."""
    spec = _file(name, columns)
    return FileSpec(
        name=spec.name,
        columns=spec.columns,
        outputs=(Output(entity, _same(*_data_columns(spec))),),
        status_column="status",
    )


def _orgs(ext: bool) -> FileSpec:
    return _plain(
        "orgs.csv",
        "orgs",
        (
            Column("name", required=True),
            Column("type", Type.ENUM, required=True, values=ORG_TYPES, extensible=ext),
            Column("identifier"),
            Column("parentSourcedId", Type.ID),
        ),
    )


def _sessions(ext: bool) -> FileSpec:
    return _plain(
        "academicSessions.csv",
        "academicSessions",
        (
            Column("title", required=True),
            Column("type", Type.ENUM, required=True, values=SESSION_TYPES, extensible=ext),
            Column("startDate", Type.DATE, required=True),
            Column("endDate", Type.DATE, required=True),
            Column("parentSourcedId", Type.ID),
            Column("schoolYear", Type.YEAR, required=True, derive=Derive("endDate", year=True)),
        ),
    )


COURSES = _plain(
    "courses.csv",
    "courses",
    (
        Column("schoolYearSourcedId", Type.ID),
        Column("title", required=True),
        Column("courseCode"),
        Column("grades"),
        Column("orgSourcedId", Type.ID, required=True),
        Column("subjects"),
        Column("subjectCodes"),
    ),
)


def _classes(ext: bool) -> FileSpec:
    return _plain(
        "classes.csv",
        "classes",
        (
            Column("title", required=True),
            Column("grades"),
            Column("courseSourcedId", Type.ID, required=True),
            Column("classCode"),
            Column("classType", Type.ENUM, required=True, values=CLASS_TYPES, extensible=ext),
            Column("location"),
            Column("schoolSourcedId", Type.ID, required=True),
            Column("termSourcedIds", Type.IDS, required=True),
            Column("subjects"),
            Column("subjectCodes"),
            Column("periods"),
        ),
    )


def _enrollments(ext: bool) -> FileSpec:
    return _plain(
        "enrollments.csv",
        "enrollments",
        (
            Column("classSourcedId", Type.ID, required=True),
            Column("schoolSourcedId", Type.ID, required=True),
            Column("userSourcedId", Type.ID, required=True),
            Column("role", Type.ENUM, required=True, values=ENROLLMENT_ROLES, extensible=ext),
            Column("primary", Type.BOOLEAN),
            Column("beginDate", Type.DATE),
            Column("endDate", Type.DATE),
        ),
    )


def _demographics(sexes: tuple[str, ...], ext: bool) -> FileSpec:
    return _plain(
        "demographics.csv",
        "demographics",
        (
            Column("birthDate", Type.DATE),
            Column("sex", Type.ENUM, values=sexes, extensible=ext),
            *(Column(flag, Type.BOOLEAN) for flag in RACE_FLAGS),
            Column("countryOfBirthCode"),
            Column("stateOfBirthAbbreviation"),
            Column("cityOfBirth"),
            Column("publicSchoolResidenceStatus"),
        ),
    )


AGENT_LINKS = Output(
    "agents",
    {"userSourcedId": "sourcedId", "agentSourcedId": "@item"},
    key=("sourcedId", "@item"),
    explode="agentSourcedIds",
    keep_extra=False,
)

# A user's role at each org of its orgSourcedIds list (OneRoster 1.1, SDS v2).
ROLES_FROM_ORG_LIST = Output(
    "roles",
    {"userSourcedId": "sourcedId", "orgSourcedId": "@item", "role": "role"},
    key=("sourcedId", "@item"),
    explode="orgSourcedIds",
    constants={"roleType": "primary"},
    keep_extra=False,
)

ENABLED_USER = Column("enabledUser", Type.BOOLEAN, required=True)
# users.csv columns that 1.1 and 1.2 share, in order.
USER_COLUMNS = (
    Column("username", required=True),
    Column("userIds", Type.USER_IDS),
    Column("givenName", required=True),
    Column("familyName", required=True),
    Column("middleName"),
    Column("identifier"),
    Column("email"),
    Column("sms"),
    Column("phone"),
    Column("agentSourcedIds", Type.IDS),
    Column("grades"),
    Column("password", secret=True),  # read, never kept
)
# Read but not user fields: they become roles (1.1), or are not roster data (password).
NOT_USER_FIELDS = ("orgSourcedIds", "role", "password", "resourceSourcedIds")


def _users(columns: tuple[Column, ...], *outputs: Output) -> FileSpec:
    fields = _same(*(c.name for c in columns if c.name not in NOT_USER_FIELDS))
    return _file("users.csv", columns, Output("users", fields), *outputs)


USERS_11 = _users(
    (
        ENABLED_USER,
        Column("orgSourcedIds", Type.IDS, required=True),
        Column("role", Type.ENUM, required=True, values=USER_ROLES_11),
        *USER_COLUMNS,
    ),
    ROLES_FROM_ORG_LIST,
    AGENT_LINKS,
)

USERS_12 = _users(
    (
        ENABLED_USER,
        *USER_COLUMNS,
        Column("userMasterIdentifier"),
        Column("resourceSourcedIds", Type.IDS, retired=True),
        Column("preferredGivenName"),
        Column("preferredMiddleName"),
        Column("preferredFamilyName"),
        Column("primaryOrgSourcedId", Type.ID),
        Column("pronouns"),
    ),
    AGENT_LINKS,
)

ROLES_12_FILE = _plain(
    "roles.csv",
    "roles",
    (
        Column("userSourcedId", Type.ID, required=True),
        Column("roleType", Type.ENUM, required=True, values=("primary", "secondary")),
        Column("role", Type.ENUM, required=True, values=ROLES_12, extensible=True),
        Column("beginDate", Type.DATE),
        Column("endDate", Type.DATE),
        Column("orgSourcedId", Type.ID, required=True),
        Column("userProfileSourcedId", Type.ID),
    ),
)


def _manifest(versions: tuple[str, ...]) -> Manifest:
    return Manifest(
        name="manifest.csv",
        version_property="oneroster.version",
        versions=versions,
        file_property_prefix="file.",
        required_properties=("manifest.version", "oneroster.version"),
        optional_properties=("source.systemName", "source.systemCode"),
    )


ONEROSTER_11 = FormatSpec(
    slug="oneroster-1.1",
    title="OneRoster 1.1 CSV",
    files=(
        _orgs(False),
        _sessions(False),
        COURSES,
        _classes(False),
        USERS_11,
        _enrollments(False),
        _demographics(("male", "female"), False),
    ),
    manifest=_manifest(("1.1",)),
    ignored_files=NON_ROSTER_FILES_11,
)

ONEROSTER_12 = FormatSpec(
    slug="oneroster-1.2",
    title="OneRoster 1.2 CSV",
    files=(
        _orgs(True),
        _sessions(True),
        COURSES,
        _classes(True),
        USERS_12,
        ROLES_12_FILE,
        _enrollments(True),
        _demographics(("male", "female", "unspecified", "other"), True),
    ),
    manifest=_manifest(("1.2", "1.2.1")),
    ignored_files=NON_ROSTER_FILES_12,
)

# OneRoster 1.0: no manifest, exactly seven files, 1.1 columns, always a full set.
ONEROSTER_10 = FormatSpec(
    slug="oneroster-1.0",
    title="OneRoster 1.0 CSV",
    files=ONEROSTER_11.files,
    default_mode=Mode.BULK,
    all_files_required=True,
)
