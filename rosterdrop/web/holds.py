"""What a held sync would remove, said the way a data manager counts it ("1,690 students,
grades 6-8, Lincoln MS"), and the names beside the IDs of any sync's changed records.

Everything is read from the roster as it stands: a held sync has changed nothing yet, so the
records it would remove are all still there with their names, roles, grades and schools.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rosterdrop.roster.models import ENTITIES, records

CHUNK = 2000  # IDs per query: well under every database's bound on parameters
ROLE_ORDER = ("student", "teacher")  # people are headlined students first
PLURAL = {
    "orgs": "schools and organisations",
    "academicSessions": "academic sessions",
    "courses": "courses",
    "classes": "classes",
    "roles": "roles",
    "demographics": "demographics records",
    "agents": "guardian links",
    "enrollments": "enrollments",
}
# The field of each entity that names the school it belongs to.
SCHOOL_FIELD = {
    "courses": "orgSourcedId",
    "classes": "schoolSourcedId",
    "roles": "orgSourcedId",
    "enrollments": "schoolSourcedId",
}


@dataclass
class HoldLine:
    count: int
    what: str
    grades: str = ""
    schools: str = ""

    def __str__(self) -> str:
        return ", ".join(
            part for part in (f"{self.count:,} {self.what}", self.grades, self.schools) if part
        )


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _rows(district, entity: str, field: str, ids: Iterable[str], *columns: str) -> Iterator:
    ids = list(dict.fromkeys(ids))
    for chunk in _chunks(ids):
        yield from records(district, entity).filter(**{f"{field}__in": chunk}).values_list(*columns)


def _org_names(district, ids: Iterable[str]) -> dict[str, str]:
    return dict(_rows(district, "orgs", "sourced_id", ids, "sourced_id", "name"))


def _schools(district, counts: Counter) -> str:
    names = _org_names(district, counts)
    ranked = [names.get(org) or org for org, _ in counts.most_common() if org]
    if len(ranked) > 3:
        return f"{', '.join(ranked[:3])} and {len(ranked) - 3} more schools"
    return ", ".join(ranked)


def _grade_key(grade: str) -> tuple:
    return (0, int(grade), "") if grade.isdigit() else (-1, 0, grade)


def _grades(grades: set[str]) -> str:
    ordered = sorted(grades, key=_grade_key)
    if not ordered:
        return ""
    if len(ordered) == 1:
        return f"grade {ordered[0].lstrip('0') or '0'}"
    first, last = (g.lstrip("0") or "0" if g.isdigit() else g for g in (ordered[0], ordered[-1]))
    return f"grades {first}-{last}"


def _roles(district, user_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """user -> (role, school) from the roster's roles; the first role a user has wins."""
    found: dict[str, tuple[str, str]] = {}
    rows = _rows(
        district, "roles", "userSourcedId", user_ids, "userSourcedId", "role", "orgSourcedId"
    )
    for user, role, org in rows:
        found.setdefault(user, (role or "", org or ""))
    return found


def _people(district, ids: list[str]) -> list[HoldLine]:
    roles = _roles(district, ids)
    groups: dict[str, tuple[Counter, set[str]]] = {}
    rows = _rows(
        district, "users", "sourced_id", ids, "sourced_id", "grades", "primaryOrgSourcedId"
    )
    for user, grades, primary in rows:
        role, org = roles.get(user, ("", ""))
        schools, grade_set = groups.setdefault(role or "user", (Counter(), set()))
        schools[primary or org] += 1
        grade_set.update(g.strip() for g in (grades or "").split(",") if g.strip())
    order = sorted(groups, key=lambda r: (ROLE_ORDER.index(r) if r in ROLE_ORDER else 9, r))
    return [
        HoldLine(
            count=sum(groups[role][0].values()),
            what=f"{role}s" if sum(groups[role][0].values()) != 1 else role,
            grades=_grades(groups[role][1]),
            schools=_schools(district, groups[role][0]),
        )
        for role in order
    ]


def _drop_parts_of(district, removed: dict[str, list[str]], people: set[str]) -> None:
    """A person's roles and demographics leave with the person: not counted twice."""
    if not people:
        return
    removed["demographics"] = [k for k in removed.get("demographics", []) if k not in people]
    rows = _rows(
        district, "roles", "sourced_id", removed.get("roles", []), "sourced_id", "userSourcedId"
    )
    removed["roles"] = [key for key, user in rows if user not in people]


def hold_summary(district, sync) -> list[HoldLine]:
    """The records a held sync would remove, entity by entity, people first by role."""
    removed: dict[str, list[str]] = {}
    for entity, key in sync.record_changes.filter(action="removed").values_list(
        "entity", "sourced_id"
    ):
        removed.setdefault(entity, []).append(key)
    people = removed.pop("users", [])
    _drop_parts_of(district, removed, set(people))
    lines = _people(district, people)
    for entity in ENTITIES:
        ids = removed.get(entity)
        if not ids:
            continue
        schools = ""
        if entity in SCHOOL_FIELD:
            field = SCHOOL_FIELD[entity]
            orgs = Counter(
                org for _, org in _rows(district, entity, "sourced_id", ids, "sourced_id", field)
            )
            schools = _schools(district, orgs)
        lines.append(HoldLine(count=len(ids), what=PLURAL[entity], schools=schools))
    return lines


def _person_names(district, ids: Iterable[str]) -> dict[str, str]:
    roles = _roles(district, ids)
    rows = _rows(district, "users", "sourced_id", ids, "sourced_id", "givenName", "familyName")
    return {
        key: " ".join(p for p in (given, family) if p)
        + (f" ({roles[key][0]})" if roles.get(key, ("",))[0] else "")
        for key, given, family in rows
    }


def _titles(district, entity: str, ids: Iterable[str]) -> dict[str, str]:
    field = "name" if entity == "orgs" else "title"
    return dict(_rows(district, entity, "sourced_id", ids, "sourced_id", field))


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
        for key, user, other in _rows(
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
