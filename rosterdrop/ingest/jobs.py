"""Sync jobs started by a request (the console's and the API's alike): an import, an approval
or a retry runs the pipeline off the request thread.

The request creates or claims the sync (status "running") and returns at once; the sync page
polls until the job has recorded the outcome.
"""

import logging
import threading

from django.conf import settings
from django.db import connection

from rosterdrop import notify
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import pipeline, states
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.pipeline import apply_approved, import_uploads

log = logging.getLogger(__name__)


def _finish(sync: Sync) -> None:
    sync.refresh_from_db()
    notify.sync_finished(sync)  # queued; the mail thread sends it


def _run_import(district, uploads: list[Upload], sync: Sync) -> None:
    _finish(import_uploads(district, uploads, sync=sync))


def _run_approval(sync: Sync) -> None:
    _finish(apply_approved(sync))


def _in_background(target, *args) -> None:
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


def start_import(district, uploads: list[Upload]) -> Sync:
    sync = states.start(district, uploads)
    _in_background(_run_import, district, uploads, sync)
    return sync


def start_approval(sync: Sync, who: str) -> bool:
    """Claim the held sync (so a double click cannot apply it twice), then apply it."""
    try:
        states.claim_approval(sync, who)
    except states.Conflict:
        return False
    _in_background(_run_approval, sync)
    return True


def start_retry(sync: Sync) -> Sync:
    """Import a failed or interrupted sync's files again, as a new sync (raises
    states.IllegalMove if that cannot be)."""
    again = pipeline.start_retry(sync)
    _in_background(_run_import, again.district, list(again.uploads.all()), again)
    return again
