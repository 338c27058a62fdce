"""What each import event says, and to whom. Hooks only queue; they never raise."""

import logging

from django.conf import settings
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


def _sync_mail(sync) -> tuple[str, str] | None:
    name = sync.district.name
    files = ", ".join(u.filename for u in sync.uploads.all()) or "(no files)"
    page = link("web:sync", sync.district.slug, sync.pk)
    if sync.status in SUCCESS:
        return (
            f"[rosterdrop] {name}: roster updated (sync {sync.pk})",
            f"Sync {sync.pk} of {files}: {sync.message}\n\n{_counts(sync.changes)}\n\n{page}\n",
        )
    if sync.status == "held":
        return (
            f"[rosterdrop] {name}: sync {sync.pk} is held for approval",
            f"Sync {sync.pk} of {files} was not applied.\n\n{sync.message}\n\n"
            f"An operator can approve or discard it here:\n{page}\n",
        )
    if sync.status == "failed":
        issues = sync.issues.filter(severity__in=("fatal", "error"))[:ISSUES_IN_MAIL]
        listed = "\n".join(f"  - {i.file or '-'} line {i.line or '-'}: {i.message}" for i in issues)
        return (
            f"[rosterdrop] {name}: sync {sync.pk} failed",
            f"Sync {sync.pk} of {files} failed; nothing was applied.\n\nReason: {sync.message}"
            f"\n\nFirst issues:\n{listed or '  (none recorded)'}\n\nFull log: {page}\n",
        )
    return None  # running, discarded


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
