"""The data assistant and "why is X" answer from what the import kept (ingest.gaps,
ingest.issue_rows), never from the raw files: the same gaps, rows and issues as the per-request
scans of the files gave, with the raw uploads gone; retention still deletes what quotes them."""

import datetime

import pytest
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from helpers import edit, rows, write
from web_fixtures import held_sync, signed_in

from rosterdrop.inbox import retention
from rosterdrop.inbox.store import stored_file
from rosterdrop.ingest import hold_summary, report
from rosterdrop.ingest.models import HeldSummary, IssueRow, RosterGaps
from rosterdrop.ingest.sent_rows import read_rows
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records
from rosterdrop.web.assistant import gaps, trace
from rosterdrop.web.sis import members

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broken(district, school):
    """The small school with a student in no class and a teacher whose row is skipped (no
    given name), so that the teacher's enrollments name a skipped record."""
    table = rows(school / "enrollments.csv")
    user, role = table[0].index("userSourcedId"), table[0].index("role")
    lonely = next(r[user] for r in table[1:] if r[role] == "student")
    write(school / "enrollments.csv", [r for r in table if r[user] != lonely])
    users = rows(school / "users.csv")
    line = next(i for i, r in enumerate(users) if r[5] == "teacher") + 1
    family = edit(school / "users.csv", line, "givenName", "")[users[0].index("familyName")]
    sync = import_path(district, school)
    assert sync.status == "applied_with_errors", sync.message
    return sync, lonely, (users[line - 1][0], family), line


# --- the answers the pages gave when they read the roster and the files on each request ------


def gaps_by_sets(district) -> dict[str, set[str]]:
    def active(entity, *fields):
        return list(records(district, entity).filter(status="active").values_list(*fields))

    enrollments = active("enrollments", "userSourcedId", "classSourcedId", "role")
    roles = active("roles", "userSourcedId", "orgSourcedId", "role")
    schools = {o for o, t in active("orgs", "sourced_id", "type") if t == "school"}
    students = {u for u, _, r in roles if r == "student"}
    parents = {a for (a,) in active("agents", "agentSourcedId")}
    parents |= {u for u, _, r in roles if r.lower() in ("parent", "guardian", "relative")}
    placed = {u for u, o, _ in roles if o in schools} | parents
    users = {u for (u,) in active("users", "sourced_id")}
    classes = {c for (c,) in active("classes", "sourced_id")}
    return {
        "students_without_classes": (students & users) - {u for u, _, _ in enrollments},
        "classes_without_teacher": classes - {c for _, c, r in enrollments if r == "teacher"},
        "classes_without_students": classes - {c for _, c, r in enrollments if r == "student"},
        "users_in_no_school": users - placed,
    }


ROWS_PER_FILE = 20  # what the trace shows of each file


class Capped(Exception):
    """A value on more rows of a file than the trace shows: which ones it shows differ (the
    first rows of the file then, the first rows with issues now)."""


def issues_by_scan(sync, value: str, seen: set[int], depth: int = 3) -> list[tuple]:
    """(issue, causes) on every row of the sync's files holding `value`, found by reading
    the files (the former per-request trace)."""
    lines = set()
    for upload in sync.uploads.all():
        with members(upload) as files:
            for name, member in files.items():
                found = read_rows(member, "cp1252", value, 0, ROWS_PER_FILE)
                if found.matched >= ROWS_PER_FILE:
                    raise Capped(value)
                lines |= {(name, line) for line, row in found.rows if value in row}
    found = [i for i in sync.issues.order_by("id") if (i.file, i.line) in lines]
    found = [i for i in found if i.pk not in seen]
    seen.update(i.pk for i in found)
    return [
        (
            i.pk,
            issues_by_scan(sync, i.value, seen, depth - 1)
            if depth > 1 and i.code.startswith("reference_") and i.value
            else [],
        )
        for i in found
    ]


def explained(items) -> list[tuple]:
    return [(item.issue.pk, explained(item.causes)) for item in items]


# --- the pages -----------------------------------------------------------------------------------


def test_gaps_are_counted_when_a_sync_applies_as_the_sets_of_records_say(district, broken):
    sync, lonely, _, _ = broken
    kept = RosterGaps.objects.get(district=district)
    assert kept.sync_id == sync.pk
    expected = gaps_by_sets(district)
    assert lonely in expected["students_without_classes"]
    for kind, ids in expected.items():
        assert kept.counts[kind] == len(ids)
        assert kept.shown[kind] == sorted(ids)[:200]
    shown = gaps(district)
    assert [u.sourced_id for u in shown.students_without_classes] == sorted(
        expected["students_without_classes"]
    )


def test_a_later_sync_counts_the_gaps_again(district, school, broken):
    _, lonely, _, _ = broken
    table = rows(school / "enrollments.csv")
    klass = table[1][table[0].index("classSourcedId")]
    enrollment = ["e-lonely", "", "", klass, table[1][4], lonely, "student", "", "", ""]
    write(school / "enrollments.csv", [*table, enrollment])
    sync = import_path(district, school)
    kept = RosterGaps.objects.get(district=district)
    assert kept.sync_id == sync.pk
    assert lonely not in kept.shown["students_without_classes"]
    assert kept.counts == {k: len(v) for k, v in gaps_by_sets(district).items()}


def test_why_gives_the_issues_and_causes_the_files_gave(district, broken):
    sync, lonely, teacher, line = broken
    ids = {teacher[0], lonely, "no-such-id"}
    ids |= {i.value for i in sync.issues.all() if i.value}
    ids |= {cell for row in IssueRow.objects.filter(sync=sync) for cell in row.cells}
    assert IssueRow.objects.filter(sync=sync, file="users.csv", line=line).exists()
    compared = 0
    for value in ids:
        answer = trace(district, value)
        referring = [
            records(district, "roles").filter(userSourcedId=value),
            records(district, "agents").filter(Q(userSourcedId=value) | Q(agentSourcedId=value)),
            records(district, "enrollments").filter(
                Q(userSourcedId=value) | Q(classSourcedId=value)
            ),
        ]
        assert answer.references == sum(r.count() for r in referring), value
        try:
            expected = issues_by_scan(sync, value, set())
        except Capped:
            continue
        named = [i.pk for i in sync.issues.filter(value=value).order_by("id")]
        told = {pk for pk, _ in expected}
        expected += [(pk, []) for pk in named if pk not in told]
        assert explained(answer.issues) == expected, value
        compared += bool(expected)
    assert compared > 3
    teacher_rows = trace(district, teacher[0]).rows
    assert ("users.csv", line) in [(name, at) for name, at, _, _ in teacher_rows]


def test_the_pages_answer_with_the_raw_uploads_gone(district, admin, broken):
    sync, lonely, teacher, line = broken
    for upload in sync.uploads.all():
        stored_file(upload).unlink()
    client = signed_in(admin)
    page = client.get(reverse("web:assistant", args=[district.slug])).content.decode()
    staff = page[page.index("Staff not imported") :]
    assert teacher[1] in staff and f"users.csv line {line}" in staff  # the family name
    why = client.get(reverse("web:why", args=[district.slug]), {"id": teacher[0]}).content
    assert f"users.csv line {line}".encode() in why and teacher[1].encode() in why
    student = client.get(reverse("web:why", args=[district.slug]), {"id": lonely}).content
    assert f"added by sync #{sync.pk}".encode() in student


def test_retention_deletes_the_rows_it_quoted_with_the_raw_uploads(
    district, admin, broken, settings
):
    sync, _, teacher, _ = broken
    assert IssueRow.objects.filter(sync=sync).exists()
    settings.UPLOAD_RETENTION_DAYS = 1
    purged = retention.purge(timezone.now() + datetime.timedelta(days=2))
    assert {p.upload.pk for p in purged} == {u.pk for u in sync.uploads.all()}
    assert not IssueRow.objects.filter(sync=sync).exists()
    page = signed_in(admin).get(reverse("web:assistant", args=[district.slug])).content.decode()
    assert teacher[1] not in page[page.index("Staff not imported") :]


def test_a_hold_is_counted_when_held_with_every_record_it_would_remove(
    district, school, monkeypatch
):
    monkeypatch.setattr(report, "HELD_CHANGES_SHOWN", 5)  # the changes it lists
    sync = held_sync(district, school)
    assert sync.record_changes.count() == 5
    removed = sync.changes["enrollments"]["removed"]
    assert removed > 5
    lines = HeldSummary.objects.get(sync=sync).lines
    assert [(line["count"], line["what"]) for line in lines] == [(removed, "enrollments")]
    assert [str(line) for line in hold_summary.of(sync)] == [
        f"{removed} enrollments, Mulberry Ashby Elementary School"
    ]


def test_files_sent_again_show_the_rows_of_their_first_import(district, admin, school, broken):
    first, _, teacher, line = broken
    again = import_path(district, school)  # the same bytes: recognised, not read again
    assert again.status == "no_changes" and again.pk != first.pk
    rows = IssueRow.objects.filter(sync=again, file="users.csv", line=line)
    assert [r.upload.syncs.filter(pk=again.pk).exists() for r in rows] == [True]
    page = signed_in(admin).get(reverse("web:assistant", args=[district.slug])).content.decode()
    assert teacher[1] in page[page.index("Staff not imported") :]
