"""Report: the sync record, its issues and changes, and the JSON the CLI prints."""

import json
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Max

from rosterdrop.ingest import hold_summary, states
from rosterdrop.ingest.models import APPLIED, Change, Issue, Sync
from rosterdrop.ingest.outcome import Outcome
from rosterdrop.roster import store
from rosterdrop.roster.store import Cursor

# A held sync lists what it would remove, up to this many records.
HELD_CHANGES_SHOWN = 10_000
ISSUE_COLUMNS = ("sync_id", "severity", "code", "file", "line", "column", "value", "message")


def stored(text: str) -> str:
    """Text as the database can keep it: PostgreSQL refuses a NUL in text."""
    return text.replace("\x00", "\\x00")


def _issue_rows(sync: Sync, outcome: Outcome) -> list[dict[str, Any]]:
    return [
        {
            "sync_id": sync.pk,
            "severity": f.severity,
            "code": f.code,
            "file": stored(f.file),
            "line": f.line,
            "column": stored(f.column),
            "value": stored(f.value[:2000]),
            "message": stored(f.message),
        }
        for f in outcome.checked.log.all()
    ]


def _sync_values(outcome: Outcome) -> dict[str, Any]:
    return {
        "status": outcome.status,
        "format": outcome.checked.format,
        "files": [f.as_dict() for f in outcome.checked.files],
        "changes": outcome.plan.changes if outcome.plan else {},
        "message": stored(outcome.message),
        "finished_at": datetime.now(UTC),
        "roster_token": outcome.roster_token,
    }


def forget_findings(sync_id: int) -> None:
    """Drop what a sync recorded before (a held sync being approved), inside the transaction
    that records it anew: until that commits, the held sync keeps its issues and changes."""
    Issue.objects.filter(sync_id=sync_id).delete()
    Change.objects.filter(sync_id=sync_id).delete()


def record_in(conn: Cursor, sync: Sync, outcome: Outcome) -> None:
    """Record an applied sync inside the transaction that applied it."""
    states.check(sync.status, outcome.status)
    rows = [tuple(row[c] for c in ISSUE_COLUMNS) for row in _issue_rows(sync, outcome)]
    columns = list(ISSUE_COLUMNS)  # quoted by the loader ("column" is an SQL keyword)
    store.insert_rows(conn, Issue._meta.db_table, columns, rows)
    values = _sync_values(outcome)
    values["finished_at"] = store.sql_time(_after_the_last(sync, values["finished_at"]))
    values["files"] = json.dumps(values["files"])
    values["changes"] = json.dumps(values["changes"])
    store.update_row(conn, Sync._meta.db_table, sync.pk, values, json_columns=("files", "changes"))


def _after_the_last(sync: Sync, now: datetime) -> datetime:
    """When an applied sync finished: now, or the time of the district's last applied sync
    if a clock (of another host) is behind it. A district's syncs apply one at a time (the
    roster token), so each then finishes after the one before, as dateLastModified filters
    and deltas suppose (ingest.models.changed_by)."""
    last = (
        Sync.objects.filter(district_id=sync.district_id, status__in=APPLIED)
        .exclude(pk=sync.pk)
        .aggregate(last=Max("finished_at"))["last"]
    )
    return max(now, last) if last else now


@transaction.atomic
def record(sync: Sync, outcome: Outcome) -> None:
    """Record a sync that changed nothing in the roster (failed, held, no changes, dry run)."""
    forget_findings(sync.pk)  # a held sync's, when approved
    Issue.objects.bulk_create(Issue(**row) for row in _issue_rows(sync, outcome))
    if outcome.status == "held" and outcome.plan:
        Change.objects.bulk_create(
            Change(sync=sync, entity=p.entity, sourced_id=key, action="removed")
            for p in outcome.plan.entities.values()
            for key in p.removed[:HELD_CHANGES_SHOWN]
        )
        plans = outcome.plan.entities.values()
        hold_summary.keep(sync, {p.entity: p.removed.to_list() for p in plans if len(p.removed)})
    values = _sync_values(outcome)
    if outcome.status == "held" and outcome.plan and outcome.plan.rollover:
        values["rollover"] = outcome.plan.rollover
    states.move(sync, values.pop("status"), **values)


def summary(sync: Sync) -> dict[str, Any]:
    """The object `rosterdrop import --json` prints."""
    return {
        "sync": sync.pk,
        "status": sync.status,
        "district": sync.district.slug,
        "dry_run": sync.dry_run,
        "files": sync.files,
        "uploads": [u.filename for u in sync.uploads.all()],
        "changes": sync.changes,
        "message": sync.message,
        "started_at": sync.started_at.isoformat(),
        "finished_at": sync.finished_at.isoformat() if sync.finished_at else None,
        "issues": [
            {
                "severity": i.severity,
                "code": i.code,
                "file": i.file,
                "line": i.line,
                "column": i.column,
                "value": i.value,
                "message": i.message,
            }
            for i in sync.issues.all()
        ],
    }
