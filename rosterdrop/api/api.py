"""Endpoints. Every object is fetched through `districts_for(user)`: another district's
objects are simply not found (404), whatever their IDs."""

from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.pagination import paginate

from rosterdrop.accounts.access import districts_for, is_operator, may_decide_holds
from rosterdrop.api.auth import TokenAuth
from rosterdrop.api.schemas import (
    ChangeOut,
    DistrictOut,
    ErrorOut,
    IssueOut,
    RecordOut,
    SyncOut,
    UploadOut,
)
from rosterdrop.feed.api import router as feed_router
from rosterdrop.feed.api import webhook_router
from rosterdrop.inbox.downloads import NotKept, raw_download
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import jobs, states
from rosterdrop.ingest.models import Sync, with_sync_times
from rosterdrop.roster.models import ENTITIES, records

api = NinjaAPI(
    title="rosterdrop",
    version="1",
    description="Roster intake: districts, uploads, syncs and their issues, the roster.",
    auth=TokenAuth(),
    urls_namespace="api",
)
api.add_router("", feed_router)
api.add_router("", webhook_router)


def _district(request, slug: str):
    district = districts_for(request.auth).filter(slug=slug).first()
    if district is None:
        raise HttpError(404, "No such district.")
    return district


def _sync(request, sync_id: int) -> Sync:
    sync = Sync.objects.filter(pk=sync_id, district__in=districts_for(request.auth)).first()
    if sync is None:
        raise HttpError(404, "No such sync.")
    return sync


def _upload(request, upload_id: int) -> Upload:
    upload = (
        Upload.objects.filter(pk=upload_id, district__in=districts_for(request.auth))
        .select_related("district")
        .first()
    )
    if upload is None:
        raise HttpError(404, "No such upload.")
    return upload


@api.get("/districts", response=list[DistrictOut], tags=["districts"])
@paginate
def list_districts(request):
    return districts_for(request.auth)


@api.get("/districts/{slug}", response={200: DistrictOut, 404: ErrorOut}, tags=["districts"])
def get_district(request, slug: str):
    return _district(request, slug)


@api.get("/districts/{slug}/uploads", response=list[UploadOut], tags=["uploads"])
@paginate
def list_uploads(request, slug: str):
    return _district(request, slug).uploads.select_related("district")


@api.get("/uploads/{upload_id}", response={200: UploadOut, 404: ErrorOut}, tags=["uploads"])
def get_upload(request, upload_id: int):
    return _upload(request, upload_id)


@api.get("/uploads/{upload_id}/raw", response={200: None, 404: ErrorOut}, tags=["uploads"])
def get_upload_raw(request, upload_id: int):
    """The bytes exactly as received, as an attachment."""
    upload = _upload(request, upload_id)
    login, ip = request.auth.get_username(), request.META.get("REMOTE_ADDR")
    try:
        return raw_download(upload, login=login, ip=ip, via="api")
    except NotKept as gone:
        raise HttpError(404, str(gone)) from None


@api.get("/districts/{slug}/syncs", response=list[SyncOut], tags=["syncs"])
@paginate
def list_syncs(request, slug: str, status: str = ""):
    syncs = _district(request, slug).syncs.select_related("district").prefetch_related("uploads")
    if status:
        syncs = syncs.filter(status=status)
    return syncs


@api.get("/syncs/{sync_id}", response={200: SyncOut, 404: ErrorOut}, tags=["syncs"])
def get_sync(request, sync_id: int):
    return _sync(request, sync_id)


@api.get("/syncs/{sync_id}/issues", response=list[IssueOut], tags=["syncs"])
@paginate
def list_issues(request, sync_id: int, severity: str = "", file: str = "", code: str = ""):
    issues = _sync(request, sync_id).issues.all()
    for key, value in (("severity", severity), ("file", file), ("code", code)):
        if value:
            issues = issues.filter(**{key: value})
    return issues


@api.get("/syncs/{sync_id}/changes", response=list[ChangeOut], tags=["syncs"])
@paginate
def list_changes(request, sync_id: int):
    return _sync(request, sync_id).record_changes.all()


def _decide(request, sync_id: int, decision: str) -> Sync:
    sync = _sync(request, sync_id)
    if not may_decide_holds(request.auth, sync.district):
        raise HttpError(403, "Only operators, or this district's admins if it lets them, decide.")
    try:
        who, ip = request.auth.get_username(), request.META.get("REMOTE_ADDR")
        jobs.decide(sync, jobs.Decision(decision), who, ip, via="api: ")
    except jobs.NotHeld as exc:
        raise HttpError(409, str(exc)) from None
    except states.Conflict:
        raise HttpError(409, "This sync was decided by someone else first.") from None
    sync.refresh_from_db()
    return sync


DECIDED = {200: SyncOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut}


@api.post("/syncs/{sync_id}/approve", response=DECIDED, tags=["syncs"])
def approve_sync(request, sync_id: int):
    """Apply a held sync (runs in the background; poll the sync until it is not running)."""
    return _decide(request, sync_id, "approve")


@api.post("/syncs/{sync_id}/discard", response=DECIDED, tags=["syncs"])
def discard_sync(request, sync_id: int):
    return _decide(request, sync_id, "discard")


@api.post("/syncs/{sync_id}/retry", response=DECIDED, tags=["syncs"])
def retry_sync(request, sync_id: int):
    """Import a failed or interrupted sync's files again, as a new sync (returned; it runs in
    the background: poll it until it is not running)."""
    if not is_operator(request.auth):
        raise HttpError(403, "Only operators retry syncs.")
    sync = _sync(request, sync_id)
    try:
        again = jobs.retry(
            sync, request.auth.get_username(), request.META.get("REMOTE_ADDR"), via="api: "
        )
    except states.IllegalMove as exc:
        raise HttpError(409, f"Cannot retry: {exc}.") from None
    again.refresh_from_db()
    return again


@api.get("/districts/{slug}/roster/{entity}", response=list[RecordOut], tags=["roster"])
@paginate
def list_records(request, slug: str, entity: str, status: str = "active"):
    found = _records(request, slug, entity)
    if status:
        found = found.filter(status=status)
    return with_sync_times(found).order_by("id")


@api.get(
    "/districts/{slug}/roster/{entity}/{sourced_id}",
    response={200: RecordOut, 404: ErrorOut},
    tags=["roster"],
)
def get_record(request, slug: str, entity: str, sourced_id: str):
    found = with_sync_times(_records(request, slug, entity).filter(sourced_id=sourced_id)).first()
    if found is None:
        raise HttpError(404, "No such record.")
    return found


def _records(request, slug: str, entity: str):
    if entity not in ENTITIES:
        raise HttpError(404, f"No entity {entity}; one of: {', '.join(ENTITIES)}.")
    return records(_district(request, slug), entity)
