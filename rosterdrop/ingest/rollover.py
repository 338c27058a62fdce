"""Term rollover: the first upload of a new school year is held for approval, with what it
would end and start said the way a district's data manager plans the summer.

The trigger: the upload adds academic sessions of a school year later than every one the
roster's active sessions belong to (a school year is named by the calendar year it ends in, as
OneRoster's `schoolYear` is: "2027" or "2026-2027"; a session without one by its end date).
A district's first upload starts no rollover. What it ends and starts is read here, while the
plan and the upload's records are at hand, and kept on the sync (`Sync.rollover`): sessions by
name, classes by school, enrollments by school and grade, students moving grade.
"""

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from rosterdrop.districts.models import District
from rosterdrop.ingest.columns import KEY, ROW
from rosterdrop.ingest.outcome import Checked
from rosterdrop.ingest.plan import EntityPlan, Plan
from rosterdrop.roster.models import records

YEAR = re.compile(r"\d{4}")
SESSION_FIELDS = ("title", "type", "startDate", "endDate", "schoolYear")
CHUNK = 2000  # IDs per query: well under every database's bound on parameters
CLASS = ("sourced_id", "schoolSourcedId", "grades")
ENROLLMENT = ("sourced_id", "classSourcedId", "schoolSourcedId")


def _year(school_year: str | None, end_date: str | None) -> int | None:
    years = YEAR.findall(school_year or "")
    if years:
        return int(years[-1])
    years = YEAR.findall(end_date or "")
    return int(years[0]) if years else None


def _grade_key(grade: str) -> tuple[int, int, str]:
    return (0, int(grade), "") if grade.isdigit() else (-1, 0, grade)


def _grade(grades: str | None) -> str:
    """A class's or student's grade as people say it ("KG", "1"); a list keeps its first."""
    first = (grades or "").split(",")[0].strip()
    return (first.lstrip("0") or "0") if first.isdigit() else first


def _spilled(checked: Checked, entity: str, rows: pl.Series, *fields: str) -> pl.DataFrame:
    """The upload's records of an entity with these row numbers: their key and fields."""
    spill = checked.records.spills.get(entity)
    columns = [KEY, *fields]
    empty = pl.DataFrame(schema={c: pl.String for c in columns})
    if spill is None or not len(rows):
        return empty
    wanted = rows.implode()
    parts = []
    for table in spill.ranges():
        frame = pl.DataFrame(pl.from_arrow(table))
        parts.append(frame.filter(pl.col(ROW).is_in(wanted)).select(columns))
    return pl.concat(parts) if parts else empty


def _roster(
    district: District, entity: str, field: str, ids: Iterable[str], *columns: str
) -> Iterator[tuple[Any, ...]]:
    """The roster's records of an entity whose `field` is one of these IDs: these columns."""
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), CHUNK):
        rows = records(district, entity).filter(**{f"{field}__in": ids[start : start + CHUNK]})
        yield from rows.values_list(*columns)


def _added(plan: Plan, entity: str) -> pl.Series:
    ep = plan.entities.get(entity)
    return ep.added if ep is not None else pl.Series(ROW, [], pl.UInt32)


def _removed(plan: Plan, entity: str) -> list[str]:
    ep = plan.entities.get(entity)
    return ep.removed.to_list() if ep is not None else []


def starts_school_year(plan: Plan, checked: Checked, district: District) -> dict[str, Any] | None:
    """What the upload would end and start, if it starts a new school year; else None."""
    sessions: EntityPlan | None = plan.entities.get("academicSessions")
    # The roster had no session: nothing to start a year after. So the table is not read
    # when it holds a first import's copied sessions already (roster/store.py Loader), nor
    # their spill, which a copied entity does not keep.
    if sessions is None or not len(sessions.added) or not sessions.active_before:
        return None
    active = records(district, "academicSessions").filter(status="active")
    before = list(active.values_list("sourced_id", *SESSION_FIELDS))
    years = [y for *_, end, school_year in before if (y := _year(school_year, end))]
    if not years:
        return None
    new = _spilled(checked, "academicSessions", sessions.added, *SESSION_FIELDS)
    starting = [
        s
        for s in new.iter_rows(named=True)
        if (_year(s["schoolYear"], s["endDate"]) or 0) > max(years)
    ]
    if not starting:
        return None
    ending = set(sessions.removed.to_list())
    year = max(_year(s["schoolYear"], s["endDate"]) or 0 for s in starting)
    return {
        "school_year": f"{year - 1}-{year}",  # as districts say it
        "sessions": {
            "ending": [
                dict(zip(SESSION_FIELDS, s[1:], strict=True)) for s in before if s[0] in ending
            ],
            "starting": [{f: s[f] for f in SESSION_FIELDS} for s in starting],
            "staying": len([s for s in before if s[0] not in ending]),
        },
        **_classes_and_enrollments(plan, checked, district),
        "grades": _grade_moves(plan, checked, district),
    }


def _classes_and_enrollments(plan: Plan, checked: Checked, district: District) -> dict[str, Any]:
    """Classes ending and starting by school; enrollments by school and their class's grade."""
    sent = _spilled(checked, "classes", _added(plan, "classes"), "schoolSourcedId", "grades")
    classes = {k: (school, grades) for k, school, grades in sent.iter_rows()}
    new_classes = set(classes)
    gone_classes = _removed(plan, "classes")
    classes.update(
        (k, (s, g)) for k, s, g in _roster(district, "classes", "sourced_id", gone_classes, *CLASS)
    )
    starting = _spilled(
        checked, "enrollments", _added(plan, "enrollments"), "classSourcedId", "schoolSourcedId"
    ).rows()
    ending = list(
        _roster(district, "enrollments", "sourced_id", _removed(plan, "enrollments"), *ENROLLMENT)
    )
    unknown = {c for _, c, _ in starting + ending if c not in classes}
    classes.update(
        (k, (s, g)) for k, s, g in _roster(district, "classes", "sourced_id", unknown, *CLASS)
    )
    schools = _school_names(
        checked,
        plan,
        district,
        {s for s, _ in classes.values()} | {s for *_, s in starting + ending},
    )

    by_school: dict[str, Counter[str]] = {}
    for key in gone_classes:
        by_school.setdefault(classes[key][0], Counter())["ending"] += 1
    for key in new_classes:
        by_school.setdefault(classes[key][0], Counter())["starting"] += 1
    by_grade: dict[tuple[str, str], Counter[str]] = {}
    for side, rows in (("ending", ending), ("starting", starting)):
        for _, klass, school in rows:
            grade = _grade(classes.get(klass, ("", ""))[1])
            by_grade.setdefault((school, grade), Counter())[side] += 1

    def name(school: str) -> str:
        return schools.get(school) or school or "(no school)"

    return {
        "classes": [
            {"school": name(s), "ending": n["ending"], "starting": n["starting"]}
            for s, n in sorted(by_school.items(), key=lambda item: name(item[0]))
        ],
        "enrollments": [
            {"school": name(s), "grade": g, "ending": n["ending"], "starting": n["starting"]}
            for (s, g), n in sorted(
                by_grade.items(), key=lambda item: (name(item[0][0]), _grade_key(item[0][1]))
            )
        ],
    }


def _school_names(
    checked: Checked, plan: Plan, district: District, ids: set[str]
) -> dict[str, str]:
    names = dict(_roster(district, "orgs", "sourced_id", ids, "sourced_id", "name"))
    sent = _spilled(checked, "orgs", _added(plan, "orgs"), "name")
    names.update(sent.iter_rows())
    return names


def _grade_moves(plan: Plan, checked: Checked, district: District) -> list[dict[str, Any]]:
    """Students whose grade the upload changes: from, to, how many."""
    users = plan.entities.get("users")
    if users is None:
        return []
    sent = dict(_spilled(checked, "users", users.updated, "grades").iter_rows())
    students = {
        user
        for user, role in _roster(district, "roles", "userSourcedId", sent, "userSourcedId", "role")
        if role == "student"
    }
    moves = Counter(
        (_grade(before), _grade(sent[key]))
        for key, before in _roster(district, "users", "sourced_id", sent, "sourced_id", "grades")
        if key in students and _grade(before) != _grade(sent[key])
    )
    return [
        {"from": old, "to": new, "students": n}
        for (old, new), n in sorted(
            moves.items(), key=lambda m: (_grade_key(m[0][0]), _grade_key(m[0][1]))
        )
    ]
