"""Roster records as OneRoster 1.2 REST objects: each entity's fields declared once (name,
canonical column, kind), used to write the objects and to filter and sort by their names."""

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from urllib.parse import quote

from rosterdrop.oneroster.completion import COURSE_PREFIX, SchoolYear, course_for
from rosterdrop.roster.models import MODELS

EXT = re.compile(r"[^a-zA-Z0-9.\-_]")
PLAIN = re.compile(r"[\w.\-~]*", re.ASCII)  # an ID a URL path holds as it is
USER_ID = re.compile(r"\{([^:{}]*):([^{}]*)\}")
TRUE, FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


@dataclass(frozen=True)
class Field:
    """One field of a OneRoster object and the canonical column it comes from.

    kind: text, date, enum (`values`, else `ext:`), bool (the strings "true"/"false"), list (a
    comma list in the column), ref / refs (GUIDRefs to `ref`), userIds. A required field is
    written even when the column is empty (text as "", enums as `fallback`)."""

    name: str
    column: str
    kind: str = "text"
    required: bool = False
    values: tuple[str, ...] = ()
    ref: str = ""
    fallback: str | None = None
    # Where an empty column is read from instead: (this record's column naming another
    # record, that record's entity, its column). SDS enrollments name no school: the class's.
    via: tuple[str, str, str] | None = None
    # A record made up when there is none (completion.py): "course" or "school_year".
    made: str = ""

    @property
    def filter_name(self) -> str:
        """The name a filter or sort uses: `course.sourcedId` for a reference."""
        return f"{self.name}.sourcedId" if self.kind == "ref" else self.name


ORG_TYPES = ("department", "district", "local", "national", "school", "state")
SESSION_TYPES = ("gradingPeriod", "semester", "schoolYear", "term")
ROLES = (
    "aide", "counselor", "districtAdministrator", "guardian", "parent", "principal", "proctor",
    "relative", "siteAdministrator", "student", "systemAdministrator", "teacher",
)  # fmt: skip
ENROLLMENT_ROLES = ("administrator", "proctor", "student", "teacher")
SEXES = ("male", "female", "unspecified", "other")
RACES = (
    "americanIndianOrAlaskaNative",
    "asian",
    "blackOrAfricanAmerican",
    "nativeHawaiianOrOtherPacificIslander",
    "white",
    "demographicRaceTwoOrMoreRaces",
    "hispanicOrLatinoEthnicity",
)


@dataclass(frozen=True)
class Kind:
    """A OneRoster object type: its canonical table, JSON keys and fields."""

    entity: str  # the roster table (roster.models.MODELS)
    many: str  # collection key: {"orgs": [...]}
    one: str  # single key: {"org": {...}}
    ref: str  # GUIDRef type
    fields: tuple[Field, ...]
    computed: tuple[str, ...] = field(default=())  # written from other tables (users' roles)

    def columns(self) -> list[str]:
        """The columns a page of records is read with (no model objects: a dict per row)."""
        own = [f.column for f in self.fields] + [f.via[0] for f in self.fields if f.via]
        extra = ["agentSourcedIds", "primaryOrgSourcedId"] if self.computed else []
        base = ["sourced_id", "status", "changed_sync_id", "metadata"]
        return list(dict.fromkeys(base + own + extra))

    def names(self) -> list[str]:
        base = ["sourcedId", "status", "dateLastModified", "metadata"]
        return base + [f.name for f in self.fields] + list(self.computed)


KINDS: dict[str, Kind] = {
    k.ref: k
    for k in (
        Kind("orgs", "orgs", "org", "org", (
            Field("name", "name", required=True),
            Field("type", "type", "enum", True, ORG_TYPES, fallback="ext:unspecified"),
            Field("identifier", "identifier", required=True),
            Field("parent", "parentSourcedId", "ref", ref="org"),
        )),
        Kind("academicSessions", "academicSessions", "academicSession", "academicSession", (
            Field("title", "title", required=True),
            Field("startDate", "startDate", "date", required=True),
            Field("endDate", "endDate", "date", required=True),
            Field("type", "type", "enum", True, SESSION_TYPES, fallback="ext:unspecified"),
            Field("parent", "parentSourcedId", "ref", ref="academicSession"),
            Field("schoolYear", "schoolYear", required=True),
        )),
        Kind("courses", "courses", "course", "course", (
            Field("title", "title", required=True),
            Field("schoolYear", "schoolYearSourcedId", "ref", ref="academicSession"),
            Field("courseCode", "courseCode", required=True),
            Field("grades", "grades", "list"),
            Field("subjects", "subjects", "list"),
            Field("org", "orgSourcedId", "ref", ref="org"),
            Field("subjectCodes", "subjectCodes", "list"),
        )),
        Kind("classes", "classes", "class", "class", (
            Field("title", "title", required=True),
            Field("classCode", "classCode"),
            Field("classType", "classType", "enum", values=("homeroom", "scheduled")),
            Field("location", "location"),
            Field("grades", "grades", "list"),
            Field("subjects", "subjects", "list"),
            Field("course", "courseSourcedId", "ref", True, ref="course", made="course"),
            Field("school", "schoolSourcedId", "ref", True, ref="org"),
            Field(
                "terms", "termSourcedIds", "refs", True, ref="academicSession", made="school_year"
            ),
            Field("subjectCodes", "subjectCodes", "list"),
            Field("periods", "periods", "list"),
        )),
        Kind("users", "users", "user", "user", (
            Field("userMasterIdentifier", "userMasterIdentifier"),
            Field("username", "username"),
            Field("userIds", "userIds", "userIds"),
            Field("enabledUser", "enabledUser", "bool", required=True, fallback="true"),
            Field("givenName", "givenName", required=True),
            Field("familyName", "familyName", required=True),
            Field("middleName", "middleName"),
            Field("preferredFirstName", "preferredGivenName"),
            Field("preferredMiddleName", "preferredMiddleName"),
            Field("preferredLastName", "preferredFamilyName"),
            Field("pronouns", "pronouns"),
            Field("primaryOrg", "primaryOrgSourcedId", "ref", ref="org"),
            Field("identifier", "identifier"),
            Field("email", "email"),
            Field("sms", "sms"),
            Field("phone", "phone"),
            Field("grades", "grades", "list"),
        ), computed=("roles", "agents")),
        Kind("enrollments", "enrollments", "enrollment", "enrollment", (
            Field("user", "userSourcedId", "ref", True, ref="user"),
            Field("class", "classSourcedId", "ref", True, ref="class"),
            Field(
                "school", "schoolSourcedId", "ref", True, ref="org",
                via=("classSourcedId", "classes", "schoolSourcedId"),
            ),
            Field("role", "role", "enum", True, ENROLLMENT_ROLES, fallback="ext:unspecified"),
            Field("primary", "primary", "bool"),
            Field("beginDate", "beginDate", "date"),
            Field("endDate", "endDate", "date"),
        )),
        Kind("demographics", "demographics", "demographics", "demographics", (
            Field("birthDate", "birthDate", "date"),
            Field("sex", "sex", "enum", values=SEXES),
            *(Field(name, name, "bool") for name in RACES),
            Field("countryOfBirthCode", "countryOfBirthCode"),
            Field("stateOfBirthAbbreviation", "stateOfBirthAbbreviation"),
            Field("cityOfBirth", "cityOfBirth"),
            Field("publicSchoolResidenceStatus", "publicSchoolResidenceStatus"),
        )),
    )
}  # fmt: skip

# Where a GUIDRef of each type points.
COLLECTIONS = {kind.ref: kind.many for kind in KINDS.values()}


def enum(value: str | None, values: tuple[str, ...]) -> str | None:
    """The value as the spec spells it, or an `ext:` extension for one outside its list."""
    if not value:
        return None
    by_lower = {v.lower(): v for v in values}
    if value.lower() in by_lower:
        return by_lower[value.lower()]
    if value.startswith("ext:"):
        value = value[4:]
    cleaned = EXT.sub("", value)
    return f"ext:{cleaned}" if cleaned else None


def boolean(value: str | None) -> str | None:
    if value is None:
        return None
    low = value.strip().lower()
    return "true" if low in TRUE else "false" if low in FALSE else None


def items(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def timestamp(moment: datetime | None) -> str:
    """ISO 8601 in UTC with milliseconds, as OneRoster writes dateLastModified."""
    if moment is None:
        return "1970-01-01T00:00:00.000Z"
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


class Writer:
    """Writes a page of records as OneRoster objects, fetching what they need from other
    tables (users' roles and guardians) once per page."""

    def __init__(self, district, base: str, sync_times: dict[int, datetime]):
        self.district, self.base, self.sync_times = district, base, sync_times
        self._stamps: dict[int, str] = {}
        self._refs: dict[tuple[str, str], dict] = {}

    @cached_property
    def first_org(self) -> str:
        """The district's first org: where a role that names none is held."""
        orgs = MODELS["orgs"].objects.filter(district=self.district, status="active")
        return orgs.order_by("id").values_list("sourced_id", flat=True).first() or ""

    def _stamp(self, sync_id: int) -> str:
        """dateLastModified: the same for every record of a sync, so written once per sync."""
        if sync_id not in self._stamps:
            self._stamps[sync_id] = timestamp(self.sync_times.get(sync_id))
        return self._stamps[sync_id]

    def ref(self, type_: str, sourced_id: str) -> dict:
        """A GUIDRef (the same dict for every mention on a page: written once, shared)."""
        key = (type_, sourced_id)
        if key not in self._refs:
            path = sourced_id if PLAIN.fullmatch(sourced_id) else quote(sourced_id, safe="")
            href = f"{self.base}/{COLLECTIONS[type_]}/{path}"
            self._refs[key] = {"href": href, "sourcedId": sourced_id, "type": type_}
        return self._refs[key]

    def value(self, f: Field, raw: str | None):
        match f.kind:
            case "text":
                return raw if raw is not None else ("" if f.required else None)
            case "date":
                return raw or None
            case "enum":
                return enum(raw, f.values) or f.fallback
            case "bool":
                return boolean(raw) or f.fallback
            case "list":
                return items(raw) or None
            case "ref":
                return self.ref(f.ref, raw) if raw else None
            case "refs":
                return [self.ref(f.ref, v) for v in items(raw)] or ([] if f.required else None)
            case "userIds":
                found = USER_ID.findall(raw or "")
                return [{"type": t, "identifier": i} for t, i in found] or None

    def objects(self, kind: Kind, page: list) -> list[dict]:
        extra: Callable[[object], dict] = (
            self._people(page) if kind.ref == "user" else lambda record: {}
        )
        borrowed = {f.name: self._borrowed(f, page) for f in kind.fields if f.via}
        out = []
        for record in page:
            obj = {
                "sourcedId": record["sourced_id"],
                "status": record["status"],
                "dateLastModified": self._stamp(record["changed_sync_id"]),
            }
            if record["metadata"]:
                obj["metadata"] = record["metadata"]
            for f in kind.fields:
                raw = record[f.column]
                if raw is None and f.via:
                    raw = borrowed[f.name].get(record[f.via[0]])
                if raw is None and f.made:
                    raw = self._made_id(f.made, record)
                value = self.value(f, raw)
                if value is not None:
                    obj[f.name] = value
            obj.update(extra(record))
            out.append(obj)
        return out

    def _made_id(self, made: str, record: dict) -> str:
        if made == "course":
            return course_for(record["sourced_id"])
        return SchoolYear.of(date.today()).sourced_id

    def made_object(self, kind: Kind, sourced_id: str) -> dict | None:
        """A made-up course or school year (completion.py) read by its ID, if a class of the
        district refers to it."""
        classes = MODELS["classes"].objects.filter(district=self.district)
        if kind.ref == "course" and sourced_id.startswith(COURSE_PREFIX):
            found = classes.filter(
                sourced_id=sourced_id.removeprefix(COURSE_PREFIX), courseSourcedId=None
            ).first()
            if found is None:
                return None
            made = {"title": found.title or "", "courseCode": ""}
            if found.schoolSourcedId:
                made["org"] = self.ref("org", found.schoolSourcedId)
            return self._made_head(sourced_id, found) | made
        year = SchoolYear.named(sourced_id)
        if kind.ref == "academicSession" and year is not None:
            found = classes.filter(termSourcedIds=None).order_by("-changed_sync_id").first()
            return None if found is None else self._made_head(sourced_id, found) | year.fields
        return None

    def _made_head(self, sourced_id: str, like) -> dict:
        return {
            "sourcedId": sourced_id,
            "status": like.status,
            "dateLastModified": self._stamp(like.changed_sync_id),
        }

    def _borrowed(self, f: Field, page: list) -> dict[str, str]:
        """For the page's records that lack the field: their other record's value of it."""
        column, entity, there = f.via
        wanted = {r[column] for r in page if r[f.column] is None}
        found = MODELS[entity].objects.filter(district=self.district, sourced_id__in=wanted)
        return dict(found.values_list("sourced_id", there))

    def _implied_roles(self, missing: list[str], page: list):
        """(user, role, org) for users the roles table has nothing on, as the rest of the
        roster says: their enrollments, else guardian of a child (at the child's orgs), else
        no known role at their primary org or the district's first."""
        active = {
            e: MODELS[e].objects.filter(district=self.district, status="active")
            for e in ("enrollments", "agents", "roles")
        }
        taught = active["enrollments"].filter(userSourcedId__in=missing)
        rows = list(
            taught.values_list("userSourcedId", "role", "schoolSourcedId", "classSourcedId")
        )
        schools = dict(
            MODELS["classes"]
            .objects.filter(district=self.district, sourced_id__in={r[3] for r in rows if not r[2]})
            .values_list("sourced_id", "schoolSourcedId")
        )
        found = set()
        for user, role, school in {(u, r, s or schools.get(c)) for u, r, s, c in rows}:
            if school:
                found.add(user)
                yield user, enum(role, ROLES) or "ext:unspecified", school
        missing = [u for u in missing if u not in found]
        guardians = defaultdict(set)
        links = active["agents"].filter(agentSourcedId__in=missing)
        for child, agent in links.values_list("userSourcedId", "agentSourcedId"):
            guardians[child].add(agent)
        at = active["roles"].filter(userSourcedId__in=guardians)
        for child, org in at.values_list("userSourcedId", "orgSourcedId").distinct():
            for agent in sorted(guardians[child]):
                found.add(agent)
                yield agent, "guardian", org
        for user in page:
            if user["sourced_id"] in missing and user["sourced_id"] not in found:
                org = user["primaryOrgSourcedId"] or self.first_org
                if org:
                    yield user["sourced_id"], "ext:unspecified", org

    def _people(self, page: list) -> Callable[[object], dict]:
        """Each user's roles (the roles table; else what the enrollments say) and agents."""
        ids = [u["sourced_id"] for u in page]
        roles, agents = defaultdict(list), defaultdict(list)
        found = MODELS["roles"].objects.filter(
            district=self.district, userSourcedId__in=ids, status="active"
        )
        orgs = {u["sourced_id"]: u["primaryOrgSourcedId"] or self.first_org for u in page}
        for r in found.order_by("id"):
            role = {"roleType": enum(r.roleType, ("primary", "secondary")) or "primary"}
            role |= {"role": enum(r.role, ROLES) or "ext:unspecified"}
            # A role at no org (Clever's staff): the user's primary org, else the district's.
            role |= {"org": self.ref("org", r.orgSourcedId or orgs[r.userSourcedId])}
            role |= {k: getattr(r, k) for k in ("beginDate", "endDate") if getattr(r, k)}
            roles[r.userSourcedId].append(role)
        for user, role, org in self._implied_roles([i for i in ids if i not in roles], page):
            kind = "primary" if not roles[user] else "secondary"
            roles[user].append({"roleType": kind, "role": role, "org": self.ref("org", org)})
        links = MODELS["agents"].objects.filter(
            district=self.district, userSourcedId__in=ids, status="active"
        )
        for user, agent in links.values_list("userSourcedId", "agentSourcedId"):
            agents[user].append(agent)

        def people(user) -> dict:
            listed = items(user["agentSourcedIds"])
            linked = listed + [a for a in agents[user["sourced_id"]] if a not in listed]
            out = {"roles": roles[user["sourced_id"]]}
            if linked:
                out["agents"] = [self.ref("user", a) for a in linked]
            return out

        return people
