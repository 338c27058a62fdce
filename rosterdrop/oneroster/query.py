"""A collection request's query parameters (limit, offset, sort, orderBy, filter, fields) read
by the REST binding's rules and turned into ORM terms: no SQL is ever built from the input."""

import operator
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import reduce

from django.conf import settings
from django.db.models import Q
from django.http import QueryDict

from rosterdrop.ingest.models import changed_by
from rosterdrop.oneroster.objects import Kind, timestamp
from rosterdrop.paging import MAX_OFFSET

CLAUSE = re.compile(r"\s*([A-Za-z][\w.]*)\s*(!=|>=|<=|=|>|<|~)\s*'((?:[^']|'')*)'\s*")
JOIN = re.compile(r"(AND|OR)(?=\s)")
# A filter's clause: field, operator, value (unquoted).
Clause = tuple[str, str, str]
LOOKUPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "=": "exact", "~": "icontains"}
COMPARE = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class QueryError(Exception):
    """A request the binding answers with a status-info error (400 or 422)."""

    def __init__(self, code_minor: str, description: str, status: int = 400):
        super().__init__(description)
        self.code_minor, self.description, self.status = code_minor, description, status


@dataclass(frozen=True)
class Query:
    where: Q
    order: list[str]
    fields: list[str] | None
    limit: int
    offset: int
    # The syncs, when the filter is one dateLastModified clause and nothing else.
    changed: list[int] | None = None


def columns(kind: Kind) -> dict[str, str]:
    """Field names a filter or sort may use, and their columns (dateLastModified apart)."""
    named = {"sourcedId": "sourced_id", "status": "status"}
    return named | {f.filter_name: f.column for f in kind.fields if f.kind not in ("refs",)}


def read(params: QueryDict, kind: Kind, district_id: int, sync_times: dict[int, datetime]) -> Query:
    terms, join = clauses(params.get("filter", ""))
    return Query(
        where=where(terms, join, kind, district_id, sync_times),
        order=order(params.get("sort", ""), params.get("orderBy", ""), kind),
        fields=selected(params, kind),
        limit=_number(params, "limit", settings.ONEROSTER_PAGE_SIZE, low=1),
        # Past a 64-bit integer the database fails (500): one bound with the JSON API's paging.
        offset=_number(params, "offset", 0, low=0, high=MAX_OFFSET),
        changed=_only_changed(terms, sync_times),
    )


def _only_changed(terms: list[Clause], sync_times: dict[int, datetime]) -> list[int] | None:
    """The syncs of a filter that is one dateLastModified clause."""
    if len(terms) != 1 or terms[0][0] != "dateLastModified":
        return None
    _, op, value = terms[0]
    return _syncs(op, value, sync_times)


def selected(params: QueryDict, kind: Kind) -> list[str] | None:
    """The `fields` asked for, comma-separated or repeated (implementations do both)."""
    names = [n.strip() for value in params.getlist("fields") for n in value.split(",")]
    names = [n for n in names if n]
    if not names:
        return None
    unknown = [n for n in names if n not in kind.names()]
    if unknown:
        raise QueryError("invalid_selection_field", f"No field {unknown[0]!r} in {kind.many}.")
    return names


def _number(params: QueryDict, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError("invaliddata", f"{name} must be a whole number.") from None
    if value < low:
        raise QueryError("invaliddata", f"{name} must be at least {low}.")
    if high is not None and value > high:
        raise QueryError("invaliddata", f"{name} must be at most {high}.")
    return min(value, settings.ONEROSTER_MAX_PAGE_SIZE) if name == "limit" else value


def order(sort: str, direction: str, kind: Kind) -> list[str]:
    """ORM ordering; the row ID last, so that pages never overlap."""
    if direction not in ("", "asc", "desc"):
        raise QueryError("invalid_selection_field", "orderBy is asc or desc.")
    if not sort:
        return ["-id"] if direction == "desc" else ["id"]
    known = columns(kind) | {"dateLastModified": "changed_sync_id"}
    if sort not in known:
        raise QueryError("invalid_selection_field", f"Cannot sort {kind.many} by {sort!r}.")
    sign = "-" if direction == "desc" else ""
    return [f"{sign}{known[sort]}", f"{sign}id"]


def clauses(text: str) -> tuple[list[Clause], str]:
    """A filter's clauses `field op 'value'`, and what joins them ("AND" or "OR", not both;
    "AND" for none or one)."""
    if not text.strip():
        return [], "AND"
    terms: list[Clause] = []
    joins, pos = set(), 0
    while True:
        found = CLAUSE.match(text, pos)
        if found is None:
            raise QueryError("invalid_filter_field", f"Cannot read the filter at {text[pos:]!r}.")
        terms.append((found.group(1), found.group(2), found.group(3).replace("''", "'")))
        pos = found.end()
        if pos == len(text):
            break
        join = JOIN.match(text, pos)
        if join is None:
            raise QueryError("invalid_filter_field", f"Expected AND or OR at {text[pos:]!r}.")
        joins.add(join.group(1))
        pos = join.end()
    if len(joins) > 1:
        raise QueryError("invalid_filter_field", "A filter joins its clauses by AND or by OR.")
    return terms, joins.pop() if joins else "AND"


def where(
    terms: list[Clause], join: str, kind: Kind, district_id: int, sync_times: dict[int, datetime]
) -> Q:
    """The filter's clauses (`clauses`) as a Q."""
    qs = [_term(name, op, value, kind, district_id, sync_times) for name, op, value in terms]
    return reduce(operator.or_ if join == "OR" else operator.and_, qs) if qs else Q()


def _term(
    name: str, op: str, value: str, kind: Kind, district_id: int, sync_times: dict[int, datetime]
) -> Q:
    if name == "dateLastModified":
        return changed_by(district_id, kind.entity, _syncs(op, value, sync_times))
    column = columns(kind).get(name)
    if column is None:
        raise QueryError("invalid_filter_field", f"Cannot filter {kind.many} by {name!r}.")
    if op == "!=":
        return ~Q(**{column: value})
    return Q(**{f"{column}__{LOOKUPS[op]}": value})


def _syncs(op: str, value: str, sync_times: dict[int, datetime]) -> list[int]:
    """The syncs whose time, as dateLastModified shows it (to the millisecond), matches: the
    records they last changed are the ones the clause selects."""
    if op == "~":
        return [pk for pk, at in sync_times.items() if value in timestamp(at)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(
            "invaliddata", f"dateLastModified compares with a date-time, not {value!r}.", 422
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    compare = COMPARE[op]
    return [
        pk
        for pk, at in sync_times.items()
        if compare(at.replace(microsecond=at.microsecond // 1000 * 1000), moment)
    ]
