"""What each import event says, and to whom. Hooks only queue; they never raise."""

import logging

from django.conf import settings
from django.db.models import Case, Count, When
from django.urls import reverse

from rosterdrop.notify.models import Subscription
from rosterdrop.notify.outbox import enabled, queue

log = logging.getLogger(__name__)

SUCCESS = ("applied", "applied_with_errors", "no_changes")
ISSUES_IN_MAIL = 10


def link(name: str, *args) -> str:
    return settings.BASE_URL.rstrip("/") + reverse(name, args=args)


def recipients(district, success: bool) -> list[str]:
    subs = Subscription.objects.filter(district=district)
    if success:
        subs = subs.filter(on_success=True)
    return list(subs.values_list("email", flat=True))


def _counts(changes: dict) -> str:
    lines = []
    for entity, c in changes.items():
        moved = {k: c.get(k, 0) for k in ("added", "updated", "removed", "reactivated")}
        if any(moved.values()):
            lines.append(f"  {entity}: " + ", ".join(f"{v} {k}" for k, v in moved.items()))
    return "\n".join(lines) or "  no records changed"


def _files(sync) -> str:
    """The files read, with their rows (counts of what came in)."""
    read = [f"  {f['name']}: {f.get('rows', 0)} rows" for f in sync.files or []]
    return "\n".join(read) or "  none could be read"


def _issues(sync) -> str:
    """How many issues of each severity, then the first ones with file:line."""
    counted = dict(
        sync.issues.values("severity").annotate(n=Count("id")).values_list("severity", "n")
    )
    totals = ", ".join(f"{counted.get(s, 0)} {s}" for s in ("fatal", "error", "warning"))
    first = sync.issues.order_by(
        Case(*(When(severity=s, then=n) for n, s in enumerate(("fatal", "error"))), default=2),
        "id",
    )[:ISSUES_IN_MAIL]
    listed = "\n".join(
        f"  - {i.file or '-'}{f':{i.line}' if i.line else ''}: {i.message}" for i in first
    )
    return f"Issues: {totals}\n\nFirst issues:\n{listed}" if listed else "Issues: none"


def _sync_mail(sync) -> tuple[str, str] | None:
    """Every result mail: what happened, the counts, the issues and the link to the full log."""
    name = sync.district.name
    files = ", ".join(u.filename for u in sync.uploads.all()) or "(no files)"
    page = link("web:sync", sync.district.slug, sync.pk)
    if sync.status in SUCCESS:
        subject = f"[rosterdrop] {name}: roster updated (sync {sync.pk})"
        if sync.status == "applied_with_errors":
            subject = f"[rosterdrop] {name}: roster updated with errors (sync {sync.pk})"
        head = f"Sync {sync.pk} of {files}: {sync.message}"
    elif sync.status == "held":
        subject = f"[rosterdrop] {name}: sync {sync.pk} is held for approval"
        head = (
            f"Sync {sync.pk} of {files} was not applied.\n\n{sync.message}\n\n"
            "An operator can approve or discard it on the sync's page."
        )
    elif sync.status == "failed":
        subject = f"[rosterdrop] {name}: sync {sync.pk} failed"
        head = f"Sync {sync.pk} of {files} failed; nothing was applied.\n\nReason: {sync.message}"
    else:
        return None  # running, discarded
    changes = "Changes:" if sync.status in SUCCESS else "Changes it would make:"
    body = (
        f"{head}\n\nFiles read:\n{_files(sync)}\n\n{changes}\n{_counts(sync.changes or {})}"
        f"\n\n{_issues(sync)}\n\nFull log: {page}\n"
    )
    return subject, body


def sync_finished(sync) -> None:
    """Queue the mails for a sync that has its final status (safe to call twice)."""
    if sync.dry_run or not enabled():
        return
    try:
        mail = _sync_mail(sync)
        if mail:
            to = recipients(sync.district, success=sync.status in SUCCESS)
            queue(f"sync:{sync.pk}:{sync.status}", to, *mail)
    except Exception:
        log.exception("could not queue the mails for sync %s", sync.pk)


def upload_unmatched(upload) -> None:
    """Queue the mails for a file whose name matched no format file or template."""
    if not enabled():
        return
    try:
        district = upload.district
        subject = f"[rosterdrop] {district.name}: {upload.filename} was not imported"
        when = f"{upload.received_at:%Y-%m-%d %H:%M} UTC"
        body = (
            f"{upload.filename} ({upload.size} bytes) arrived at {when} and matched no file "
            f"of your import format.\n\n{upload.outcome}\n\n{link('web:uploads', district.slug)}\n"
        )
        queue(f"upload:{upload.pk}:unmatched", recipients(district, success=False), subject, body)
    except Exception:
        log.exception("could not queue the mails for upload %s", upload.pk)
