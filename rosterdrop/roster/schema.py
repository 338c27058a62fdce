"""The canonical roster's rules that hold whatever format a district sends: keys and references."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Ref:
    """A field of one entity that names records of another (a comma list when `many`)."""

    field: str
    target: str
    many: bool = False
    # A broken strong reference skips the row; a weak one is kept and reported as a warning.
    strong: bool = True


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
    "users": (Ref("primaryOrgSourcedId", "orgs", strong=False),),
    "roles": (Ref("userSourcedId", "users"), Ref("orgSourcedId", "orgs")),
    "demographics": (Ref("sourcedId", "users"),),
    "agents": (Ref("userSourcedId", "users"), Ref("agentSourcedId", "users", strong=False)),
    "enrollments": (
        Ref("classSourcedId", "classes"),
        Ref("schoolSourcedId", "orgs"),
        Ref("userSourcedId", "users"),
    ),
}

# What a district data manager calls each entity, for messages.
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
