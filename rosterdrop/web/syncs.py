"""Sync history, one sync's changes and issues, the error log download, approve and discard,
and retry (a failed or interrupted import)."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from rosterdrop.accounts.access import may_decide_holds
from rosterdrop.accounts.decorators import client_ip, district_view, require_operator
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.ingest import hold_summary, jobs, states
from rosterdrop.ingest.engine import APPLIED
from rosterdrop.ingest.models import Change, Issue, Sync
from rosterdrop.ingest.report import ISSUE_COLUMNS
from rosterdrop.roster.models import ENTITIES, records
from rosterdrop.web.downloads import csv_response
from rosterdrop.web.holds import names

MOVES = ("added", "updated", "removed", "reactivated")


@district_view
def sync_list(request, district):
    syncs = (
        district.syncs.annotate(
            errors=Count("issues", filter=Q(issues__severity__in=("fatal", "error")))
        )
        .prefetch_related("uploads")
        .order_by("-started_at", "-id")
    )
    page = Paginator(syncs, 50).get_page(request.GET.get("page"))
    return render(request, "web/syncs.html", {"district": district, "page": page, "moves": MOVES})


def _issues(sync: Sync, params) -> tuple:
    issues = sync.issues.all()
    chosen = {k: params.get(k, "") for k in ("severity", "file", "code")}
    for key, value in chosen.items():
        if value:
            issues = issues.filter(**{key: value})
    return issues, chosen


class _Added:
    """The records a sync added, entity after entity, as one sequence for the paginator:
    each entity is its own table. How many each has is what the sync counted, if it was
    applied (counting them again would read every table whole, millions of rows, on each
    page); a sync held, failed or discarded added none."""

    def __init__(self, district, sync: Sync, entities):
        self.parts = [
            records(district, e).filter(first_seen_sync_id=sync.pk).order_by("id") for e in entities
        ]
        applied = sync.status in APPLIED
        self.counts = [sync.changes.get(e, {}).get("added", 0) if applied else 0 for e in entities]

    def count(self) -> int:
        return sum(self.counts)

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, page: slice) -> list:
        found, start, stop = [], page.start or 0, page.stop
        for part, count in zip(self.parts, self.counts, strict=True):
            if start < count and stop > 0:
                found += list(part[max(start, 0) : min(stop, count)])
            start, stop = start - count, stop - count
        return found


def _added(district, sync: Sync, entity: str) -> _Added:
    return _Added(district, sync, [entity] if entity in ENTITIES else ENTITIES)


def _changes(request, district, sync: Sync):
    """Updated / removed / reactivated rows from Change; added ones from the roster."""
    action = request.GET.get("action", "")
    entity = request.GET.get("entity", "")
    if action == "added":
        rows = _added(district, sync, entity)
        page = Paginator(rows, 50).get_page(request.GET.get("cpage"))
        items = [
            {
                "entity": r.entity,
                "sourced_id": r.sourced_id,
                "action": "added",
                "fields": [
                    {"field": k, "before": None, "after": v}
                    for k, v in r.data.items()
                    if k != "metadata"
                ],
            }
            for r in page
        ]
        return items, page
    changes = sync.record_changes.all()
    if action:
        changes = changes.filter(action=action)
    if entity:
        changes = changes.filter(entity=entity)
    page = Paginator(changes, 50).get_page(request.GET.get("cpage"))
    items = [
        {"entity": c.entity, "sourced_id": c.sourced_id, "action": c.action, "fields": c.fields}
        for c in page
    ]
    return items, page


@district_view
def sync_detail(request, district, pk: int):
    sync = get_object_or_404(Sync, pk=pk, district=district)
    if request.headers.get("HX-Request") and request.GET.get("poll"):
        if sync.status == Sync.Status.RUNNING:
            return render(request, "web/_sync_running.html", {"district": district, "sync": sync})
        response = render(request, "web/_sync_running.html", {"district": district, "sync": sync})
        response["HX-Refresh"] = "true"  # finished: reload the whole page once
        return response
    issues, chosen = _issues(sync, request.GET)
    changes, change_page = _changes(request, district, sync)
    labels = names(district, [(c["entity"], c["sourced_id"]) for c in changes])
    for c in changes:
        c["label"] = labels.get((c["entity"], c["sourced_id"]), "")
    all_issues = sync.issues.all()
    return render(
        request,
        "web/sync.html",
        {
            "district": district,
            "sync": sync,
            "moves": MOVES,
            "issues": Paginator(issues, 100).get_page(request.GET.get("ipage")),
            "chosen": chosen,
            "severities": Issue.Severity.values,
            "issue_files": sorted(set(all_issues.values_list("file", flat=True)) - {""}),
            "issue_codes": sorted(set(all_issues.values_list("code", flat=True))),
            "severity_counts": dict(
                all_issues.values_list("severity")
                .annotate(n=Count("id"))
                .values_list("severity", "n")
            ),
            "changes": changes,
            "change_page": change_page,
            "change_action": request.GET.get("action", ""),
            "change_entity": request.GET.get("entity", ""),
            "actions": ["added", *Change.Action.values],
            "entities": sorted((sync.changes or {}).keys()),
            "filter_query": request.GET.urlencode(),
            "may_decide": may_decide_holds(request.user, district),
            "hold": hold_summary.of(sync) if sync.status == Sync.Status.HELD else [],
        },
    )


@district_view
def issues_csv(request, district, pk: int):
    sync = get_object_or_404(Sync, pk=pk, district=district)
    issues, _ = _issues(sync, request.GET)
    record(
        AuditEvent.Kind.DOWNLOAD,
        login=request.user.get_username(),
        ip=client_ip(request),
        detail=f"error log of sync {sync.pk} of {district.slug}",
    )
    return csv_response(
        f"{district.slug}-sync-{sync.pk}-issues.csv",
        list(ISSUE_COLUMNS),
        (
            [sync.pk, i.severity, i.code, i.file, i.line, i.column, i.value, i.message]
            for i in issues
        ),
    )


@require_http_methods(["GET", "POST"])
@district_view
def decide(request, district, pk: int, decision: str):
    """Approve or discard a held sync: operators, and the district's admins when it lets
    them. GET asks for confirmation with what the sync would remove; POST decides."""
    if not may_decide_holds(request.user, district):
        raise PermissionDenied("Only operators decide held syncs of this district.")
    sync = get_object_or_404(Sync, pk=pk, district=district)
    who = request.user.get_username()
    if request.method == "GET" and sync.status == Sync.Status.HELD:
        return render(
            request,
            "web/hold_confirm.html",
            {
                "district": district,
                "sync": sync,
                "decision": decision,
                "hold": hold_summary.of(sync),
            },
        )
    try:
        jobs.decide(sync, jobs.Decision(decision), who, client_ip(request))
    except jobs.NotHeld as exc:
        messages.error(request, str(exc))
    except states.Conflict:
        messages.error(request, "Someone else decided this sync first.")
    else:
        done = (
            "approved; applying now"
            if decision == "approve"
            else "discarded; the roster is unchanged"
        )
        messages.success(request, f"Sync {sync.pk} {done}.")
    return redirect("web:sync", district.slug, sync.pk)


@require_POST
@district_view
def retry(request, district, pk: int):
    """Import a failed or interrupted sync's files again (operators), as a new sync."""
    require_operator(request)
    sync = get_object_or_404(Sync, pk=pk, district=district)
    try:
        again = jobs.retry(sync, request.user.get_username(), client_ip(request))
    except states.IllegalMove as exc:
        messages.error(request, f"Cannot retry: {exc}.")
        return redirect("web:sync", district.slug, sync.pk)
    messages.success(request, f"Sync {sync.pk} is imported again as sync {again.pk}.")
    return redirect("web:sync", district.slug, again.pk)
