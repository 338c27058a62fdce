"""The data assistant: gaps in the loaded roster, rows that were skipped and why, and
"why is X not in the roster?" for any ID."""

import operator
from dataclasses import dataclass, field
from functools import reduce

from django.db.models import Q
from django.shortcuts import render

from rosterdrop.formats import get_format
from rosterdrop.formats.spec import FormatSpec
from rosterdrop.ingest import states
from rosterdrop.ingest.models import Change, Issue, Sync
from rosterdrop.ingest.unpack import Member
from rosterdrop.roster.models import ENTITIES, records
from rosterdrop.roster.schema import FIELDS
from rosterdrop.web.access import district_view
from rosterdrop.web.sis import members, read_rows, rows_at

STAFF_ROLES = {
    "teacher",
    "administrator",
    "aide",
    "staff",
    "proctor",
    "principal",
    "districtadministrator",
    "siteadministrator",
    "systemadministrator",
}
PARENT_ROLES = {"parent", "guardian", "relative"}
CONTACT_COLUMNS = {"email", "phone", "sms", "mobile", "phonenumber"}
SHOWN = 200
DONE = states.OUTCOMES
# Fields whose value names a person or a class: "referenced by N records" counts these.
REFERRING = ("userSourcedId", "classSourcedId", "agentSourcedId")


def _active(district, entity: str):
    return records(district, entity).filter(status="active")


def _values(district, entity: str, *fields: str) -> list[tuple]:
    return list(_active(district, entity).values_list(*fields))


@dataclass
class Gaps:
    students_without_classes: list = field(default_factory=list)
    classes_without_teacher: list = field(default_factory=list)
    classes_without_students: list = field(default_factory=list)
    users_in_no_school: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def gaps(district) -> Gaps:
    """Set arithmetic over IDs (a few columns of the active records), no per-record queries."""
    enrollments = _values(district, "enrollments", "userSourcedId", "classSourcedId", "role")
    roles = _values(district, "roles", "userSourcedId", "orgSourcedId", "role")
    schools = set(
        _active(district, "orgs").filter(type="school").values_list("sourced_id", flat=True)
    )
    enrolled = {u for u, _, _ in enrollments}
    taught = {c for _, c, r in enrollments if r == "teacher"}
    attended = {c for _, c, r in enrollments if r == "student"}
    students = {u for u, _, r in roles if r == "student"}
    # Parents and guardians belong to their children, not to a school.
    parents = {a for (a,) in _values(district, "agents", "agentSourcedId")}
    parents |= {u for u, _, r in roles if r.lower() in PARENT_ROLES}
    placed = {u for u, o, _ in roles if o in schools} | parents
    users = _active(district, "users")
    classes = _active(district, "classes")
    result = Gaps()
    lonely = users.filter(sourced_id__in=students - enrolled)
    result.students_without_classes = list(lonely.order_by("sourced_id")[:SHOWN])
    result.classes_without_teacher = list(classes.exclude(sourced_id__in=taught)[:SHOWN])
    result.classes_without_students = list(classes.exclude(sourced_id__in=attended)[:SHOWN])
    result.users_in_no_school = list(users.exclude(sourced_id__in=placed)[:SHOWN])
    result.counts = {
        "students_without_classes": lonely.count(),
        "classes_without_teacher": classes.exclude(sourced_id__in=taught).count(),
        "classes_without_students": classes.exclude(sourced_id__in=attended).count(),
        "users_in_no_school": users.exclude(sourced_id__in=placed).count(),
    }
    return result


@dataclass
class Skipped:
    issue: Issue
    row: dict
    role: str
    name: str

    @property
    def contact(self) -> bool:
        return self.issue.column.lower() in CONTACT_COLUMNS


def latest_sync(district) -> Sync | None:
    return district.syncs.filter(dry_run=False, status__in=DONE).first()


def person(spec: FormatSpec | None, file_name: str, row: dict[str, str]) -> tuple[str, str]:
    """The role and name of the person a row describes, as the format's file says: the role
    of its roles output (a constant, or the row's role column), or "parent" for a file whose
    people are the guardians of its links (ParentSquare's parents.csv); ("", "") for a file
    of no people."""
    file = spec.file(spec.claim(file_name).name) if spec else None
    users = [o for o in file.outputs if o.entity == "users"] if file else []
    if not users:
        return ("", "") if file else (row.get("role", ""), "")
    names = [users[0].fields.get(f) for f in ("givenName", "familyName")]
    name = " ".join(row.get(n, "") for n in names if isinstance(n, str)).strip()
    for output in file.outputs:
        if output.entity == "roles":
            source = output.fields.get("role")
            from_row = row.get(source, "") if isinstance(source, str) else ""
            return output.constants.get("role") or from_row, name
        if output.entity == "agents" and output.fields.get("agentSourcedId") in users[0].key:
            return "parent", name
    return row.get("role", ""), name


def _format_of(district) -> FormatSpec | None:
    try:
        return get_format(district.format, district.slug)
    except ValueError:
        return None


def skipped_people(district, sync: Sync | None) -> tuple[list[Skipped], list[Skipped]]:
    """Rows of people skipped by the last sync, each classified by the file it came from
    (and read back from the upload for the name)."""
    if sync is None:
        return [], []
    issues = list(sync.issues.filter(severity="error", line__isnull=False)[:500])
    by_file: dict[str, list[Issue]] = {}
    for issue in issues:
        by_file.setdefault(issue.file, []).append(issue)
    staff, parents = [], []
    files = _sync_members(sync)
    spec = _format_of(district)
    for name, found in by_file.items():
        if name not in files:
            continue
        rows = rows_at(files[name], district.fallback_encoding, {i.line for i in found})
        for issue in found:
            row = rows.get(issue.line, {})
            role, shown = person(spec, name, row)
            item = Skipped(issue, row, role, shown)
            if role.lower() in STAFF_ROLES:
                staff.append(item)
            elif role.lower() in PARENT_ROLES:
                parents.append(item)
    return staff, parents


def _sync_members(sync: Sync) -> dict[str, Member]:
    files: dict[str, Member] = {}
    for upload in sync.uploads.all():
        files |= members(upload)
    return files


@district_view
def assistant(request, district):
    sync = latest_sync(district)
    staff, parents = skipped_people(district, sync)
    return render(
        request,
        "web/assistant.html",
        {
            "district": district,
            "gaps": gaps(district),
            "sync": sync,
            "staff": staff,
            "parents": parents,
            "shown": SHOWN,
        },
    )


@dataclass
class Explained:
    """An issue on a row, with the issues that caused it (the rows its value names)."""

    issue: Issue
    causes: list["Explained"] = field(default_factory=list)


@dataclass
class Trace:
    query: str
    records: list = field(default_factory=list)
    references: int = 0
    changes: list = field(default_factory=list)
    sync: Sync | None = None
    issues: list[Explained] = field(default_factory=list)
    rows: list = field(default_factory=list)  # (file name, line, header, row)


# How far "why" follows a chain of causes (a section <- its teacher <- a missing contact).
CAUSE_DEPTH = 3
ROWS_PER_FILE = 20


def trace(district, query: str) -> Trace:
    """Where an ID is: its records, its history, and every row of the last sync's files
    where it appears, with every issue on those rows and the chain of their causes."""
    result = Trace(query)
    for entity in ENTITIES:
        result.records += records(district, entity).filter(sourced_id=query)
        people = [f for f in REFERRING if f in FIELDS[entity]]
        if people:
            named = Q.create([(f, query) for f in people], Q.OR)
            result.references += records(district, entity).filter(named).count()
    result.changes = list(
        Change.objects.filter(sync__district=district, sourced_id=query)
        .select_related("sync")
        .order_by("-id")[:50]
    )
    result.sync = latest_sync(district)
    if result.sync is not None:
        files = _sync_members(result.sync)
        result.rows = _rows_with(files, district.fallback_encoding, query)
        seen: set[int] = set()
        result.issues = _issues_on(result.sync, files, district, result.rows, seen, CAUSE_DEPTH)
        # Issues that name it where its row can no longer be read (retention).
        named = result.sync.issues.filter(value=query).exclude(pk__in=seen)
        result.issues += [Explained(i) for i in named[:SHOWN]]
    return result


def _rows_with(files: dict[str, Member], fallback: str, value: str) -> list[tuple]:
    """The rows of the files holding `value` as one of their cells (IDs are exact)."""
    found = []
    for name, member in files.items():
        rows = read_rows(member, fallback, value, 0, ROWS_PER_FILE)
        found += [(name, line, rows.header, row) for line, row in rows.rows if value in row]
    return found


def _issues_on(sync: Sync, files, district, rows: list[tuple], seen: set[int], depth: int):
    """The issues of `sync` on these rows; for a broken reference, the issues on the rows of
    what it names, as its causes (each issue told once)."""
    lines: dict[str, set[int]] = {}
    for name, line, _, _ in rows:
        lines.setdefault(name, set()).add(line)
    if not lines:
        return []
    place = reduce(operator.or_, (Q(file=name, line__in=found) for name, found in lines.items()))
    issues = [i for i in sync.issues.filter(place).order_by("id") if i.pk not in seen]
    seen.update(i.pk for i in issues)
    explained = []
    for issue in issues:
        item = Explained(issue)
        if depth > 1 and issue.code.startswith("reference_") and issue.value:
            named = _rows_with(files, district.fallback_encoding, issue.value)
            item.causes = _issues_on(sync, files, district, named, seen, depth - 1)
        explained.append(item)
    return explained


@district_view
def why(request, district):
    query = request.GET.get("id", "").strip()
    return render(
        request,
        "web/why.html",
        {
            "district": district,
            "trace": trace(district, query) if query else None,
            "query": query,
        },
    )
