"""Signed webhooks (Standard Webhooks): each applied sync is announced to the district's
subscriptions through a durable outbox, written in the sync's own transaction.

A webhook announces; the consumer reads the feed. The message carries the sync's counts and
its event range. Delivery: `webhook-id` stays the same on every retry (the consumer's key to
process a message once), a new `webhook-timestamp` and signature each try; a 2xx is success,
410 disables the subscription, anything else is retried on the Standard Webhooks schedule.
"""

import base64
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from standardwebhooks import Webhook

from rosterdrop.feed.models import Attempt, Batch, Delivery, Subscription
from rosterdrop.process import checkpoint

log = logging.getLogger(__name__)

# Waits before each retry (Standard Webhooks' example schedule, about 3 days in all).
SCHEDULE = [
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=5), timedelta(hours=10), timedelta(hours=14), timedelta(hours=20),
    timedelta(hours=24),
]  # fmt: skip
TIMEOUT = 15  # seconds for an endpoint to answer
BATCH = 50
POLL_SECONDS = 10.0

_wake = threading.Event()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def subscribe(district, url: str, entities: list[str] | None = None) -> Subscription:
    return Subscription.objects.create(
        district=district, url=url, secret=new_secret(), entities=sorted(entities or [])
    )


def message(batch: Batch, slug: str) -> dict:
    return {
        "type": "roster.changed",
        "timestamp": batch.applied_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "district": slug,
            "sync": batch.sync_id,
            "from_seq": batch.first_seq,
            "to_seq": batch.last_seq,
            "counts": batch.counts,
            "events": f"/api/districts/{slug}/events?after={batch.first_seq - 1}",
        },
    }


def announce(batch: Batch) -> int:
    """Queue the batch's message for each subscription that wants it, in the caller's
    transaction (the sync's): it is sent if and only if the sync is committed."""
    subscriptions = Subscription.objects.filter(district_id=batch.district_id, active=True)
    queued = 0
    for sub in subscriptions.select_related("district"):
        if sub.entities and not set(sub.entities) & set(batch.counts):
            continue
        body = json.dumps(message(batch, sub.district.slug), separators=(",", ":"))
        Delivery.objects.create(
            subscription=sub,
            message_id=f"msg_{sub.pk}_{batch.last_seq}",
            body=body,
            next_attempt_at=timezone.now(),
        )
        queued += 1
    if queued:
        transaction.on_commit(wake)
    return queued


def wake() -> None:
    _wake.set()


def due(now):
    return Delivery.objects.filter(
        next_attempt_at__lte=now, subscription__active=True
    ).select_related("subscription")


def send_due(limit: int = BATCH) -> int:
    """Try every delivery that is due; how many were delivered. Never raises for an
    endpoint's failure."""
    now = timezone.now()
    delivered = 0
    for delivery in list(due(now).order_by("id")[:limit]):
        claim = now + timedelta(seconds=settings.WEBHOOK_CLAIM_SECONDS)
        # Claimed for a while, so two senders at once do not both send it; a sender killed
        # while holding it leaves it to be tried again once the claim runs out.
        taken = Delivery.objects.filter(
            pk=delivery.pk, next_attempt_at=delivery.next_attempt_at
        ).update(next_attempt_at=claim)
        if taken:
            delivered += deliver(delivery)
    return delivered


def deliver(delivery: Delivery) -> bool:
    sub = delivery.subscription
    sent_at = timezone.now()
    body = delivery.body.encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "rosterdrop-webhooks",
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(sub.secret).sign(delivery.message_id, sent_at, body),
    }
    request = urllib.request.Request(sub.url, data=body, headers=headers, method="POST")
    started = time.monotonic()
    status, error = None, ""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            status = answer.status
    except urllib.error.HTTPError as refused:
        status, error = refused.code, f"HTTP {refused.code}"
    except (OSError, ValueError) as failed:
        error = f"{type(failed).__name__}: {failed}"[:2000]
    seconds = time.monotonic() - started
    if status is not None and 200 <= status < 300:
        checkpoint("webhook-sent")  # tests kill the sender here: answered, not yet recorded
    Attempt.objects.create(delivery=delivery, status=status, error=error, seconds=seconds)
    delivery.attempts += 1
    delivery.last_status, delivery.last_error = status, error
    now = timezone.now()
    if status is not None and 200 <= status < 300:
        delivery.delivered_at, delivery.next_attempt_at = now, None
    elif status == 410:
        delivery.gave_up_at, delivery.next_attempt_at = now, None
        Subscription.objects.filter(pk=sub.pk).update(
            active=False, disabled_reason=f"the endpoint answered 410 Gone at {now:%Y-%m-%d %H:%M}"
        )
    elif delivery.attempts > len(SCHEDULE):
        delivery.gave_up_at, delivery.next_attempt_at = now, None
    else:
        delivery.next_attempt_at = now + SCHEDULE[delivery.attempts - 1]
    delivery.save()
    return delivery.delivered_at is not None


def run_forever(stop: threading.Event, poll: float = POLL_SECONDS) -> None:
    """The sender of `rosterdrop serve` (and `rosterdrop webhook send --loop`)."""
    while not stop.is_set():
        _wake.clear()
        try:
            send_due()
        except Exception:
            log.exception("webhook pass failed")
        finally:
            close_old_connections()
        _wake.wait(poll)


def start(stop: threading.Event, poll: float = POLL_SECONDS) -> threading.Thread:
    thread = threading.Thread(target=run_forever, args=(stop, poll), name="webhooks", daemon=True)
    thread.start()
    return thread
