"""The data assistant: gaps in the loaded roster, rows that were skipped and why, and
"why is X not in the roster?" for any ID."""

import operator
from collections import Counter
from dataclasses import dataclass, field
from functools import reduce

from django.db.models import Q
from django.shortcuts import render

from rosterdrop.accounts.decorators import district_view
from rosterdrop.formats import get_format
from rosterdrop.formats.spec import FormatSpec
from rosterdrop.ingest import gaps as roster_gaps
from rosterdrop.ingest import issue_rows, states
from rosterdrop.ingest.models import Change, Issue, IssueRow, Sync
from rosterdrop.roster.models import ENTITIES, records
from rosterdrop.roster.schema import FIELDS

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
PARENT_ROLES = set(roster_gaps.PARENT_ROLES)
CONTACT_COLUMNS = {"email", "phone", "sms", "mobile", "phonenumber"}
SHOWN = roster_gaps.SHOWN
DONE = states.OUTCOMES
# Fields whose value names a person or a class: "referenced by N records" counts these.
REFERRING = ("userSourcedId", "classSourcedId", "agentSourcedId")


@dataclass
class Gaps:
    """The roster's gaps as the last applied sync counted them (ingest.gaps), with the
    records of the first IDs of each."""

    students_without_classes: list = field(default_factory=list)
    classes_without_teacher: list = field(default_factory=list)
    classes_without_students: list = field(default_factory=list)
    users_in_no_school: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)


def gaps(district) -> Gaps:
    counted = roster_gaps.of(district)
    result = Gaps(counts=counted.counts)
    for kind, entity in roster_gaps.KINDS.items():
        ids = counted.shown.get(kind, [])
        found = {r.sourced_id: r for r in records(district, entity).filter(sourced_id__in=ids)}
        setattr(result, kind, [found[i] for i in ids if i in found])
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
    (the rows as kept when it was imported, for the names: ingest.issue_rows)."""
    if sync is None:
        return [], []
    issues = list(sync.issues.filter(severity="error", line__isnull=False)[:500])
    rows = {(r.file, r.line): r.row for r in issue_rows.of(sync)}
    staff, parents = [], []
    spec = _format_of(district)
    for issue in issues:
        if (issue.file, issue.line) not in rows:
            continue
        row = rows[(issue.file, issue.line)]
        role, shown = person(spec, issue.file, row)
        item = Skipped(issue, row, role, shown)
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
    """Where an ID is: its records, its history, and the rows of the last sync's files with
    an issue where it appears, with every issue on those rows and the chain of their causes.
    Read from what the import kept (ingest.issue_rows), never from the raw files."""
    result = Trace(query)
    for entity in ENTITIES:
        result.records += records(district, entity).filter(sourced_id=query)
        # One query per field, united: an OR of them is not answered from their indexes.
        named = [
            records(district, entity).filter(**{f: query}).values("pk")
            for f in REFERRING
            if f in FIELDS[entity]
        ]
        if named:
            result.references += named[0].union(*named[1:]).count()
    result.changes = list(
        Change.objects.filter(sync__district=district, sourced_id=query)
        .select_related("sync")
        .order_by("-id")[:50]
    )
    result.sync = latest_sync(district)
    if result.sync is not None:
        kept = issue_rows.of(result.sync)
        result.rows = _rows_with(kept, query)
        seen: set[int] = set()
        result.issues = _issues_on(result.sync, kept, result.rows, seen, CAUSE_DEPTH)
        # Issues that name it where its row was not kept (retention, or past issue_rows.KEPT).
        named = result.sync.issues.filter(value=query).exclude(pk__in=seen)
        result.issues += [Explained(i) for i in named[:SHOWN]]
    return result


def _rows_with(kept: list[IssueRow], value: str) -> list[tuple]:
    """The kept rows holding `value` as one of their cells (IDs are exact), at most
    ROWS_PER_FILE of each file."""
    found, per_file = [], Counter[str]()
    for row in kept:
        if value in row.cells and per_file[row.file] < ROWS_PER_FILE:
            per_file[row.file] += 1
            found.append((row.file, row.line, row.header, row.cells))
    return found


def _issues_on(sync: Sync, kept: list[IssueRow], rows: list[tuple], seen: set[int], depth: int):
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
            named = _rows_with(kept, issue.value)
            item.causes = _issues_on(sync, kept, named, seen, depth - 1)
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
