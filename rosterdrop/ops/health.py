"""`/healthz` (the process answers) and `/readyz` (it can do its work) for a load balancer.

Neither says more than "ok" or "unavailable" per check: no names, paths or errors, which go to
the log instead.
"""

import logging
import tempfile

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

log = logging.getLogger(__name__)


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Up: touches nothing, so a slow database never gets a live process restarted."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to take traffic: the database answers and the data folder takes a new file."""
    checks = {"database": _database_answers(), "data_folder": _data_folder_writable()}
    ready = all(checks.values())
    body = {name: "ok" if ok else "unavailable" for name, ok in checks.items()}
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", **body}, status=200 if ready else 503
    )


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        log.warning("readiness: the database does not answer", exc_info=True)
        connection.close_if_unusable_or_obsolete()
        return False


def _data_folder_writable() -> bool:
    try:
        with tempfile.TemporaryFile(dir=settings.DATA_DIR, prefix=".readyz-"):
            return True
    except OSError:
        log.warning("readiness: the data folder is not writable", exc_info=True)
        return False
