"""The canonical roster's rules that hold whatever format a district sends: keys and references."""

from dataclasses import dataclass

# Columns of records in flight between the pipeline and the store: source ID, content hash,
# and the extra source columns a format keeps (JSON text, or null); and a hash of the source
# ID, by which records are matched with the roster's without comparing millions of strings.
KEY, HASH, METADATA, KEYHASH = "_key", "_hash", "metadata", "_keyhash"


@dataclass(frozen=True)
class Ref:
    """A field of one entity that names records of another (a comma list when `many`)."""

    field: str
    target: str
    many: bool = False
    # A broken strong reference skips the row; a weak one is kept and reported as a warning.
    strong: bool = True
    why: str = ""  # a format's reason for skipping, said in the issue


REFS: dict[str, tuple[Ref, ...]] = {
    "orgs": (Ref("parentSourcedId", "orgs", strong=False),),
    "academicSessions": (Ref("parentSourcedId", "academicSessions", strong=False),),
    "courses": (
        Ref("orgSourcedId", "orgs"),
        Ref("schoolYearSourcedId", "academicSessions", strong=False),
    ),
    "classes": (
        Ref("courseSourcedId", "courses"),
        Ref("schoolSourcedId", "orgs"),
        Ref("termSourcedIds", "academicSessions", many=True),
    ),
    "users": (
        Ref("primaryOrgSourcedId", "orgs", strong=False),
        Ref("agentSourcedIds", "users", many=True, strong=False),
    ),
    "roles": (Ref("userSourcedId", "users"), Ref("orgSourcedId", "orgs")),
    "demographics": (Ref("sourcedId", "users"),),
    "agents": (Ref("userSourcedId", "users"), Ref("agentSourcedId", "users", strong=False)),
    "enrollments": (
        Ref("classSourcedId", "classes"),
        Ref("schoolSourcedId", "orgs"),
        Ref("userSourcedId", "users"),
    ),
}

# The fields of each entity, in a fixed order: every record carries all of them (null when
# its format has no such column), so the same person sent in two formats hashes the same.
FIELDS: dict[str, tuple[str, ...]] = {
    "orgs": ("name", "type", "identifier", "parentSourcedId"),
    "academicSessions": ("title", "type", "startDate", "endDate", "parentSourcedId", "schoolYear"),
    "courses": (
        "schoolYearSourcedId", "title", "courseCode", "grades", "orgSourcedId", "subjects",
        "subjectCodes",
    ),
    "classes": (
        "title", "grades", "courseSourcedId", "classCode", "classType", "location",
        "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods",
    ),
    "users": (
        "enabledUser", "username", "userIds", "givenName", "familyName", "middleName",
        "identifier", "email", "sms", "phone", "agentSourcedIds", "grades", "userMasterIdentifier",
        "preferredGivenName", "preferredMiddleName", "preferredFamilyName", "primaryOrgSourcedId",
        "pronouns",
    ),
    "roles": (
        "userSourcedId", "roleType", "role", "beginDate", "endDate", "orgSourcedId",
        "userProfileSourcedId",
    ),
    "demographics": (
        "birthDate", "sex", "americanIndianOrAlaskaNative", "asian", "blackOrAfricanAmerican",
        "nativeHawaiianOrOtherPacificIslander", "white", "demographicRaceTwoOrMoreRaces",
        "hispanicOrLatinoEthnicity", "countryOfBirthCode", "stateOfBirthAbbreviation",
        "cityOfBirth", "publicSchoolResidenceStatus",
    ),
    "agents": ("userSourcedId", "agentSourcedId"),
    "enrollments": (
        "classSourcedId", "schoolSourcedId", "userSourcedId", "role", "primary", "beginDate",
        "endDate",
    ),
}  # fmt: skip

# The longest value a field may hold, in characters: a longer one is a row error (the row is
# skipped), never stored. Names and IDs 255, a comma list of IDs 64 KiB (an administrator at
# a thousand schools), any other text 1000 (README, "Values are bounded and clean").
ID_LENGTH, NAME_LENGTH, LIST_LENGTH, TEXT_LENGTH = 255, 255, 65_536, 1000
NAME_FIELDS = frozenset(
    {
        "name", "title", "username", "givenName", "familyName", "middleName",
        "preferredGivenName", "preferredMiddleName", "preferredFamilyName",
    }
)  # fmt: skip


def max_length(field: str) -> int:
    """The longest value of a canonical field (an unknown one, such as an extra column: text)."""
    refs = {r.field: r.many for refs in REFS.values() for r in refs}
    if field in refs:
        return LIST_LENGTH if refs[field] else ID_LENGTH
    if field == "sourcedId":
        return ID_LENGTH
    return NAME_LENGTH if field in NAME_FIELDS else TEXT_LENGTH


# What a district data manager calls each entity, for messages.
# Records that some formats cannot name by a stable ID of their own (SDS v1, Clever and
# ParentSquare key an enrollment by class and person; OneRoster by the file's sourcedId): when
# one of them arrives under a new ID but these fields match a record that would be removed,
# it is that record, renamed -- not a removal and an addition.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "enrollments": ("classSourcedId", "userSourcedId", "role"),
}

LABELS = {
    "orgs": "school or organisation",
    "academicSessions": "academic session",
    "courses": "course",
    "classes": "class",
    "users": "user",
    "roles": "role",
    "demographics": "demographics record",
    "agents": "guardian link",
    "enrollments": "enrollment",
}
