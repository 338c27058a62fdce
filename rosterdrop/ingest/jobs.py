"""Sync jobs a request starts, the console's and the API's alike: an import, the decision on a
held sync, a retry. What may be decided, and the audit record of it, are here once; the
pipeline runs off the request thread (syncs.py).

The request creates or claims the sync (status "running") and returns at once; the sync page
polls until the job has recorded the outcome.
"""

import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import connection

from rosterdrop import notify
from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import states, syncs
from rosterdrop.ingest.models import Sync

log = logging.getLogger(__name__)


class Decision(StrEnum):
    APPROVE = "approve"
    DISCARD = "discard"


class NotHeld(Exception):
    """The sync is not held (any more): there is nothing to decide."""


def _finish(sync: Sync) -> None:
    sync.refresh_from_db()
    notify.sync_finished(sync)  # queued; the mail thread sends it


def _run_import(district: District, uploads: list[Upload], sync: Sync) -> None:
    _finish(syncs.import_uploads(district, uploads, sync=sync))


def _run_approval(sync: Sync) -> None:
    _finish(syncs.apply_approved(sync))


def _in_background(target: Callable[..., None], *args: Any) -> None:
    def run() -> None:
        try:
            target(*args)
        except Exception:
            log.exception("web import failed")
        finally:
            connection.close()  # this thread's own connection

    if settings.WEB_IMPORT_IN_BACKGROUND:
        threading.Thread(target=run, name="web-import", daemon=True).start()
    else:
        target(*args)


def start_import(district: District, uploads: list[Upload]) -> Sync:
    sync = states.start(district, uploads)
    _in_background(_run_import, district, uploads, sync)
    return sync


def decide(sync: Sync, decision: Decision, who: str, ip: str | None, via: str = "") -> None:
    """Approve a held sync (claimed here, so that a double click cannot apply it twice, then
    applied off the request thread) or discard it; the decision is audited.

    Raises NotHeld if it is not held, states.Conflict if someone else decided it first.
    `via`: where the decision came from, as the audit record says it ("api: ").
    """
    if sync.status != Sync.Status.HELD:
        raise NotHeld(f"Sync {sync.pk} is {sync.get_status_display()}, not held.")
    if decision == Decision.APPROVE:
        states.claim_approval(sync, who)
        _in_background(_run_approval, sync)
    else:
        syncs.discard(sync, who)
    detail = f"{via}{decision} held sync {sync.pk} of {sync.district.slug}"
    record(AuditEvent.Kind.ADMIN, login=who, ip=ip, detail=detail)


def retry(sync: Sync, who: str, ip: str | None, via: str = "") -> Sync:
    """Import a failed or interrupted sync's files again, as a new sync (returned, running),
    and audit it; raises states.IllegalMove if that cannot be."""
    again = syncs.start_retry(sync)
    _in_background(_run_import, again.district, list(again.uploads.all()), again)
    detail = f"{via}retry sync {sync.pk} of {sync.district.slug} as sync {again.pk}"
    record(AuditEvent.Kind.ADMIN, login=who, ip=ip, detail=detail)
    return again
