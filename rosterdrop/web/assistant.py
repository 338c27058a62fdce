"""The data assistant: gaps in the loaded roster, rows that were skipped and why, and
"why is X not in the roster?" for any ID."""

from dataclasses import dataclass, field

from django.db.models import Q
from django.shortcuts import render

from rosterdrop.ingest.models import Change, Issue, Sync
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
DONE = ("applied", "applied_with_errors", "no_changes", "held", "failed")
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
    placed = {u for u, o, _ in roles if o in schools}
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

    @property
    def name(self) -> str:
        given = next(
            (v for k, v in self.row.items() if k.lower() in ("givenname", "firstname")), ""
        )
        family = next(
            (v for k, v in self.row.items() if k.lower() in ("familyname", "lastname")), ""
        )
        return f"{given} {family}".strip()

    @property
    def contact(self) -> bool:
        return self.issue.column.lower() in CONTACT_COLUMNS


def latest_sync(district) -> Sync | None:
    return district.syncs.filter(dry_run=False, status__in=DONE).first()


def skipped_people(district, sync: Sync | None) -> tuple[list[Skipped], list[Skipped]]:
    """Rows skipped by the last sync, read back from the upload to learn each person's role."""
    if sync is None:
        return [], []
    issues = list(sync.issues.filter(severity="error", line__isnull=False)[:500])
    by_file: dict[str, list[Issue]] = {}
    for issue in issues:
        by_file.setdefault(issue.file, []).append(issue)
    staff, parents = [], []
    files = {}
    for upload in sync.uploads.all():
        files |= members(upload)
    for name, found in by_file.items():
        if name not in files:
            continue
        rows = rows_at(files[name], district.fallback_encoding, {i.line for i in found})
        for issue in found:
            row = rows.get(issue.line, {})
            role = next((v for k, v in row.items() if k.lower() == "role"), "")
            item = Skipped(issue, row, role)
            if role.lower() in STAFF_ROLES:
                staff.append(item)
            elif role.lower() in PARENT_ROLES:
                parents.append(item)
    return staff, parents


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
class Trace:
    query: str
    records: list = field(default_factory=list)
    references: int = 0
    changes: list = field(default_factory=list)
    issues: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # (upload, file name, line, header, row)


def trace(district, query: str, uploads_searched: int = 5) -> Trace:
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
    result.issues = list(
        Issue.objects.filter(sync__district=district, value__icontains=query)
        .select_related("sync")
        .order_by("-id")[:100]
    )
    for upload in district.uploads.all()[:uploads_searched]:
        for name, member in members(upload).items():
            found = read_rows(member, district.fallback_encoding, query, 0, 20)
            for line, row in found.rows:
                result.rows.append((upload, name, line, found.header, row))
    return result


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
