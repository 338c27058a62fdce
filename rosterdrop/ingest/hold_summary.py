"""What a held sync would remove, said the way a data manager counts it ("1,690 students,
grades 6-8, Lincoln MS"), counted when the sync is held and kept with it (`HeldSummary`):
counted per view, a hold of 115k enrollments took seconds.

Everything is read from the roster as it stands: a held sync has changed nothing yet, so the
records it would remove are all still there with their names, roles, grades and schools.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from rosterdrop.districts.models import District
from rosterdrop.ingest.models import HeldSummary, Sync
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


def id_rows(
    district: District, entity: str, field: str, ids: Iterable[str], *columns: str
) -> Iterator[tuple[Any, ...]]:
    ids = list(dict.fromkeys(ids))
    for chunk in _chunks(ids):
        yield from records(district, entity).filter(**{f"{field}__in": chunk}).values_list(*columns)


def _org_names(district: District, ids: Iterable[str]) -> dict[str, str]:
    return dict(id_rows(district, "orgs", "sourced_id", ids, "sourced_id", "name"))


def _schools(district: District, counts: Counter[str]) -> str:
    names = _org_names(district, counts)
    ranked = [names.get(org) or org for org, _ in counts.most_common() if org]
    if len(ranked) > 3:
        return f"{', '.join(ranked[:3])} and {len(ranked) - 3} more schools"
    return ", ".join(ranked)


def _grade_key(grade: str) -> tuple[int, int, str]:
    return (0, int(grade), "") if grade.isdigit() else (-1, 0, grade)


def _grades(grades: set[str]) -> str:
    ordered = sorted(grades, key=_grade_key)
    if not ordered:
        return ""
    if len(ordered) == 1:
        return f"grade {ordered[0].lstrip('0') or '0'}"
    first, last = (g.lstrip("0") or "0" if g.isdigit() else g for g in (ordered[0], ordered[-1]))
    return f"grades {first}-{last}"


def roles_of(district: District, user_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """user -> (role, school) from the roster's roles; the first role a user has wins."""
    found: dict[str, tuple[str, str]] = {}
    rows = id_rows(
        district, "roles", "userSourcedId", user_ids, "userSourcedId", "role", "orgSourcedId"
    )
    for user, role, org in rows:
        found.setdefault(user, (role or "", org or ""))
    return found


def _people(district: District, ids: list[str]) -> list[HoldLine]:
    roles = roles_of(district, ids)
    groups: dict[str, tuple[Counter[str], set[str]]] = {}
    rows = id_rows(
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


def _drop_parts_of(district: District, removed: dict[str, list[str]], people: set[str]) -> None:
    """A person's roles and demographics leave with the person: not counted twice."""
    if not people:
        return
    removed["demographics"] = [k for k in removed.get("demographics", []) if k not in people]
    rows = id_rows(
        district, "roles", "sourced_id", removed.get("roles", []), "sourced_id", "userSourcedId"
    )
    removed["roles"] = [key for key, user in rows if user not in people]


def summarise(district: District, removed: dict[str, list[str]]) -> list[HoldLine]:
    """The records a held sync would remove ({entity: IDs}), entity by entity, people first
    by role."""
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
                org for _, org in id_rows(district, entity, "sourced_id", ids, "sourced_id", field)
            )
            schools = _schools(district, orgs)
        lines.append(HoldLine(count=len(ids), what=PLURAL[entity], schools=schools))
    return lines


def keep(sync: Sync, removed: dict[str, list[str]]) -> None:
    """Count what a sync being held would remove (every ID, not only those its changes
    list) and keep it with the sync."""
    lines = [asdict(line) for line in summarise(sync.district, removed)]
    HeldSummary.objects.update_or_create(sync=sync, defaults={"lines": lines})


def of(sync: Sync) -> list[HoldLine]:
    """What a held sync would remove, as counted when it was held; for a sync held before
    these were kept, counted now from its changes."""
    kept = HeldSummary.objects.filter(sync=sync).first()
    if kept is not None:
        return [HoldLine(**line) for line in kept.lines]
    removed: dict[str, list[str]] = {}
    for entity, key in sync.record_changes.filter(action="removed").values_list(
        "entity", "sourced_id"
    ):
        removed.setdefault(entity, []).append(key)
    return summarise(sync.district, removed)
