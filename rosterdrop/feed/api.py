"""`GET /api/districts/SLUG/events`: the change feed, paged by an `after` cursor."""

from datetime import datetime

from django.conf import settings
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.pagination import paginate
from ninja.responses import Status

from rosterdrop.accounts.access import districts_for
from rosterdrop.feed import events, webhooks
from rosterdrop.feed.models import Batch, Counter, Subscription
from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES

router = Router(tags=["feed"])
webhook_router = Router(tags=["webhooks"])
MAX_LIMIT = 10_000


class EventOut(Schema):
    seq: int
    sync: int
    applied_at: datetime
    entity: str
    sourced_id: str
    action: str


class FeedOut(Schema):
    events: list[EventOut]
    next: int  # the `after` of the next call
    has_more: bool
    last_seq: int  # the district's newest event number


class GoneOut(Schema):
    detail: str
    oldest_after: int  # the oldest cursor that can still be read


@router.get("/districts/{slug}/events", response={200: FeedOut, 410: GoneOut})
def list_events(request, slug: str, after: int = 0, limit: int = 100):
    """Events after the cursor `after` (0: from the start), oldest first. 410 when events
    after it were deleted (kept FEED_RETENTION_DAYS): read the roster in full, then follow
    from the X-Roster-Cursor that read answered with."""
    district = _district(request, slug)
    if limit < 1 or after < 0:
        raise HttpError(422, "limit is at least 1 and after at least 0.")
    # The counter, the events and their syncs' times as of one commit: a sync committing
    # meanwhile writes all three.
    with store.one_state():
        counter = Counter.objects.filter(pk=district.pk).first() or Counter(district=district)
        if after < counter.pruned_through:
            return Status(
                410,
                {
                    "detail": f"Events up to {counter.pruned_through} are no longer kept "
                    f"({settings.FEED_RETENTION_DAYS} days): read the roster in full (the export, "
                    "or the OneRoster service), then follow the feed from its X-Roster-Cursor.",
                    "oldest_after": counter.pruned_through,
                },
            )
        limit = min(limit, MAX_LIMIT)
        page = events.read(district.pk, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        batches = Batch.objects.filter(sync_id__in={e["sync_id"] for e in page})
        times = dict(batches.values_list("sync_id", "applied_at"))
        shown = [{**e, "sync": e["sync_id"], "applied_at": times.get(e["sync_id"])} for e in page]
        return {
            "events": shown,
            "next": page[-1]["seq"] if page else after,
            "has_more": more,
            "last_seq": counter.last_seq,
        }


class SubscriptionIn(Schema):
    url: str
    entities: list[str] = []


class SubscriptionOut(Schema):
    id: int
    url: str
    entities: list[str]
    active: bool
    disabled_reason: str
    created_at: datetime


class CreatedOut(SubscriptionOut):
    secret: str  # shown once, at creation


class AttemptOut(Schema):
    at: datetime
    status: int | None
    error: str
    seconds: float


class DeliveryOut(Schema):
    message_id: str
    body: str
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    gave_up_at: datetime | None
    last_status: int | None
    log: list[AttemptOut]

    @staticmethod
    def resolve_log(obj) -> list:
        return list(obj.log.all())


def _district(request, slug: str):
    district = districts_for(request.auth).filter(slug=slug).first()
    if district is None:
        raise HttpError(404, "No such district.")
    return district


def _subscription(request, webhook_id: int) -> Subscription:
    found = Subscription.objects.filter(
        pk=webhook_id, district__in=districts_for(request.auth)
    ).first()
    if found is None:
        raise HttpError(404, "No such webhook.")
    return found


@webhook_router.get("/districts/{slug}/webhooks", response=list[SubscriptionOut])
def list_webhooks(request, slug: str):
    return Subscription.objects.filter(district=_district(request, slug))


@webhook_router.post("/districts/{slug}/webhooks", response={201: CreatedOut})
def add_webhook(request, slug: str, body: SubscriptionIn):
    """Subscribe a URL to the district's applied syncs; the signing secret is in this answer
    only."""
    unknown = sorted(set(body.entities) - set(ENTITIES))
    if unknown:
        raise HttpError(422, f"Unknown entities: {', '.join(unknown)}.")
    if not body.url.startswith(("https://", "http://")):
        raise HttpError(422, "The URL must be http(s).")
    return Status(201, webhooks.subscribe(_district(request, slug), body.url, body.entities))


@webhook_router.delete("/webhooks/{webhook_id}", response={204: None})
def remove_webhook(request, webhook_id: int):
    _subscription(request, webhook_id).delete()
    return Status(204, None)


@webhook_router.get("/webhooks/{webhook_id}/deliveries", response=list[DeliveryOut])
@paginate
def list_deliveries(request, webhook_id: int):
    """The delivery log, newest first: each message and every attempt."""
    sub = _subscription(request, webhook_id)
    return sub.deliveries.prefetch_related("log").order_by("-id")
