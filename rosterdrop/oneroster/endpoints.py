"""The GET paths of the Rostering service: for each path of the official document, which
records of which object type it answers with. The scopes each path accepts are read from the
document itself."""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from django.db.models import Q

from rosterdrop.oneroster.clients import short_scope
from rosterdrop.oneroster.objects import items
from rosterdrop.roster.models import MODELS

DOCUMENT = Path(__file__).parent / "openapi" / "onerosterv1p2rostersservice_openapi3_v1p0.json"

# Which records of an object type a path selects, from the district and the path's IDs.
Select = Callable[[object, dict[str, str]], Q]


def _all(district, ids) -> Q:
    return Q()


def _typed(value: str) -> Select:
    return lambda district, ids: Q(type__iexact=value)


def _active(entity: str, district, **where):
    return MODELS[entity].objects.filter(district=district, status="active", **where)


def _people(role: str, *, org: str = "", **enrolled) -> Select:
    """Users with a role: by the roles table (at `org` when given, a path ID) or by their
    enrollments (with `enrolled` conditions whose values name path IDs)."""

    def select(district, ids) -> Q:
        where = {k: ids[v] for k, v in enrolled.items()}
        by_enrollment = _active("enrollments", district, role__iexact=role, **where)
        found = Q(sourced_id__in=by_enrollment.values("userSourcedId"))
        if not enrolled:
            at = {"orgSourcedId": ids[org]} if org else {}
            by_role = _active("roles", district, role__iexact=role, **at)
            found |= Q(sourced_id__in=by_role.values("userSourcedId"))
        return found

    return select


def _classes_of(id_name: str, role: str = "") -> Select:
    """Classes a user is enrolled in (as `role` when given)."""

    def select(district, ids) -> Q:
        roles = {"role__iexact": role} if role else {}
        enrolled = _active("enrollments", district, userSourcedId=ids[id_name], **roles)
        return Q(sourced_id__in=enrolled.values("classSourcedId"))

    return select


def _classes_in_term(district, ids) -> Q:
    term = ids["termSourcedId"]
    return (
        Q(termSourcedIds=term)
        | Q(termSourcedIds__startswith=f"{term},")
        | Q(termSourcedIds__endswith=f",{term}")
        | Q(termSourcedIds__contains=f",{term},")
    )


def _terms_of_school(district, ids) -> Q:
    """Terms of the school's classes (academic sessions name no school of their own)."""
    classes = _active("classes", district, schoolSourcedId=ids["schoolSourcedId"])
    terms = {t for value in classes.values_list("termSourcedIds", flat=True) for t in items(value)}
    return Q(type__iexact="term", sourced_id__in=terms)


def _where(**fields: str) -> Select:
    """Records whose columns equal path IDs: _where(courseSourcedId="courseSourcedId")."""
    return lambda district, ids: Q(**{column: ids[name] for column, name in fields.items()})


@dataclass(frozen=True)
class Endpoint:
    path: str  # as the document writes it
    kind: str  # objects.KINDS key
    select: Select
    single: bool = False
    # Path IDs that must name an existing record: {ID name: path of its collection}.
    parents: tuple[tuple[str, str], ...] = ()
    # Serves the made-up records of its kind too (completion.py): the unfiltered single paths.
    made: bool = False

    @cached_property
    def pattern(self) -> re.Pattern:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


def _pair(path: str, kind: str, select: Select = _all) -> list[Endpoint]:
    """A collection and its single-object path."""
    one = lambda district, ids: select(district, ids) & Q(sourced_id=ids["sourcedId"])  # noqa: E731
    single = Endpoint(f"{path}/{{sourcedId}}", kind, one, True, made=select is _all)
    return [Endpoint(path, kind, select), single]


SCHOOL = ("schoolSourcedId", "/schools")
CLASS = ("classSourcedId", "/classes")

ENDPOINTS: list[Endpoint] = [
    *_pair("/academicSessions", "academicSession"),
    *_pair("/classes", "class"),
    *_pair("/courses", "course"),
    *_pair("/demographics", "demographics"),
    *_pair("/enrollments", "enrollment"),
    *_pair("/gradingPeriods", "academicSession", _typed("gradingPeriod")),
    *_pair("/orgs", "org"),
    *_pair("/schools", "org", _typed("school")),
    *_pair("/students", "user", _people("student")),
    *_pair("/teachers", "user", _people("teacher")),
    *_pair("/terms", "academicSession", _typed("term")),
    *_pair("/users", "user"),
    Endpoint(
        "/classes/{classSourcedId}/students", "user",
        _people("student", classSourcedId="classSourcedId"), parents=(CLASS,),
    ),
    Endpoint(
        "/classes/{classSourcedId}/teachers", "user",
        _people("teacher", classSourcedId="classSourcedId"), parents=(CLASS,),
    ),
    Endpoint(
        "/courses/{courseSourcedId}/classes", "class",
        _where(courseSourcedId="courseSourcedId"), parents=(("courseSourcedId", "/courses"),),
    ),
    Endpoint(
        "/schools/{schoolSourcedId}/classes", "class",
        _where(schoolSourcedId="schoolSourcedId"), parents=(SCHOOL,),
    ),
    Endpoint(
        "/schools/{schoolSourcedId}/classes/{classSourcedId}/enrollments", "enrollment",
        _where(schoolSourcedId="schoolSourcedId", classSourcedId="classSourcedId"),
        parents=(SCHOOL, CLASS),
    ),
    *(
        Endpoint(
            f"/schools/{{schoolSourcedId}}/classes/{{classSourcedId}}/{role}s", "user",
            _people(role, schoolSourcedId="schoolSourcedId", classSourcedId="classSourcedId"),
            parents=(SCHOOL, CLASS),
        )
        for role in ("student", "teacher")
    ),
    Endpoint(
        "/schools/{schoolSourcedId}/courses", "course",
        _where(orgSourcedId="schoolSourcedId"), parents=(SCHOOL,),
    ),
    Endpoint(
        "/schools/{schoolSourcedId}/enrollments", "enrollment",
        _where(schoolSourcedId="schoolSourcedId"), parents=(SCHOOL,),
    ),
    *(
        Endpoint(
            f"/schools/{{schoolSourcedId}}/{role}s", "user",
            _people(role, org="schoolSourcedId"), parents=(SCHOOL,),
        )
        for role in ("student", "teacher")
    ),
    Endpoint(
        "/schools/{schoolSourcedId}/terms", "academicSession", _terms_of_school, parents=(SCHOOL,)
    ),
    Endpoint(
        "/students/{studentSourcedId}/classes", "class",
        _classes_of("studentSourcedId", "student"), parents=(("studentSourcedId", "/students"),),
    ),
    Endpoint(
        "/teachers/{teacherSourcedId}/classes", "class",
        _classes_of("teacherSourcedId", "teacher"), parents=(("teacherSourcedId", "/teachers"),),
    ),
    Endpoint(
        "/users/{userSourcedId}/classes", "class",
        _classes_of("userSourcedId"), parents=(("userSourcedId", "/users"),),
    ),
    Endpoint(
        "/terms/{termSourcedId}/classes", "class",
        _classes_in_term, parents=(("termSourcedId", "/terms"),),
    ),
    Endpoint(
        "/terms/{termSourcedId}/gradingPeriods", "academicSession",
        lambda district, ids: Q(type__iexact="gradingPeriod", parentSourcedId=ids["termSourcedId"]),
        parents=(("termSourcedId", "/terms"),),
    ),
]  # fmt: skip

BY_PATH = {e.path: e for e in ENDPOINTS}


@cache
def document() -> dict:
    return json.loads(DOCUMENT.read_text())


@cache
def scopes(path: str) -> frozenset[str]:
    """The short scope names of which a token needs one for this path, as the document lists
    them (either of roster and roster-core for the core paths: see
    docs/reference/output-and-scale.md A.1)."""
    security = document()["paths"][path]["get"]["security"]
    return frozenset(short_scope(s) for req in security for s in req.get("OAuth2CC", []))


def match(rest: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint a path under the base URL names, and its IDs."""
    rest = "/" + rest.strip("/")
    for endpoint in ENDPOINTS:
        found = endpoint.pattern.match(rest)
        if found:
            return endpoint, found.groupdict()
    return None
