"""The names beside the IDs of any sync's changed records: a person and role, a class's
title, a person in a class."""

from collections.abc import Iterable

from rosterdrop.ingest.hold_summary import id_rows, roles_of


def _person_names(district, ids: Iterable[str]) -> dict[str, str]:
    roles = roles_of(district, ids)
    rows = id_rows(district, "users", "sourced_id", ids, "sourced_id", "givenName", "familyName")
    return {
        key: " ".join(p for p in (given, family) if p)
        + (f" ({roles[key][0]})" if roles.get(key, ("",))[0] else "")
        for key, given, family in rows
    }


def _titles(district, entity: str, ids: Iterable[str]) -> dict[str, str]:
    field = "name" if entity == "orgs" else "title"
    return dict(id_rows(district, entity, "sourced_id", ids, "sourced_id", field))


def names(district, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(entity, ID) -> what a person calls the record: a name and role, a class's title, a
    person in a class; for the few records one page shows."""
    wanted: dict[str, set[str]] = {}
    for entity, key in keys:
        wanted.setdefault(entity, set()).add(key)
    found: dict[tuple[str, str], str] = {}
    people = set(wanted.get("users", ()))
    linked = {}  # enrollments and roles name a person (and a class)
    for entity in ("enrollments", "roles", "demographics", "agents"):
        field = "sourced_id" if entity == "demographics" else "userSourcedId"
        extra = "classSourcedId" if entity == "enrollments" else field
        for key, user, other in id_rows(
            district, entity, "sourced_id", wanted.get(entity, ()), "sourced_id", field, extra
        ):
            linked[(entity, key)] = (user, other if entity == "enrollments" else "")
            people.add(user)
    persons = _person_names(district, people)
    classes = _titles(district, "classes", {c for _, c in linked.values() if c})
    for (entity, key), (user, klass) in linked.items():
        who = persons.get(user, user)
        found[(entity, key)] = f"{who} in {classes.get(klass, klass)}" if klass else who
    for key in wanted.get("users", ()):
        if key in persons:
            found[("users", key)] = persons[key]
    for entity in ("orgs", "academicSessions", "courses", "classes"):
        for key, title in _titles(district, entity, wanted.get(entity, ())).items():
            if title:
                found[(entity, key)] = title
    return found
