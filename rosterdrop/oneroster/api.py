"""`GET /api/districts/SLUG/export`: the OneRoster 1.2 CSV package, bulk or `?since=SYNC_ID`."""

from ninja import Router
from ninja.errors import HttpError

from rosterdrop.accounts.access import districts_for
from rosterdrop.ingest.models import Sync
from rosterdrop.oneroster.views import package_download

router = Router(tags=["roster"])


@router.get("/districts/{slug}/export", response={200: None})
def export_roster(request, slug: str, since: int | None = None):
    """The roster as a OneRoster 1.2 CSV zip: bulk, or a delta of what syncs applied after
    `since` changed (rows with status and dateLastModified)."""
    district = districts_for(request.auth).filter(slug=slug).first()
    if district is None:
        raise HttpError(404, "No such district.")
    after = None
    if since is not None:
        after = Sync.objects.filter(pk=since, district=district).exclude(finished_at=None).first()
        if after is None:
            raise HttpError(404, f"No finished sync {since} of this district.")
    login, ip = request.auth.get_username(), request.META.get("REMOTE_ADDR")
    return package_download(district, after, login, ip, "api")
