"""Signed webhooks: each applied sync announced to the district's subscriptions through a
durable outbox, signed the Standard Webhooks way, checked by a real receiver on loopback;
retries keep the webhook-id, 410 disables; a sender killed with -9 delivers after restart."""

import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import SCHOOL_SMALL
from django.utils import timezone
from helpers import rows, write
from sftp_fixtures import ROSTERDROP, base_env
from standardwebhooks import Webhook

from rosterdrop.feed import webhooks
from rosterdrop.feed.models import Batch, Delivery, Subscription
from rosterdrop.ingest.syncs import import_path

pytestmark = pytest.mark.django_db(transaction=True)


class Receiver:
    """A vendor's endpoint on loopback: verifies every signature, answers the statuses it is
    given in turn (then 200), and processes each webhook-id once."""

    def __init__(self, answers: list[int] | None = None):
        self.secret = ""
        self.answers = list(answers or [])
        self.received: list[dict] = []  # every request: id, timestamp, verified payload
        self.processed: dict[str, dict] = {}  # by webhook-id, the first time only
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                msg_id = self.headers["webhook-id"]
                receiver.received.append(
                    {"id": msg_id, "timestamp": self.headers["webhook-timestamp"], "data": payload}
                )
                status = receiver.answers.pop(0) if receiver.answers else 200
                if status < 300:
                    receiver.processed.setdefault(msg_id, payload)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def subscribed(district, receiver, **kwargs) -> Subscription:
    sub = webhooks.subscribe(district, receiver.url, **kwargs)
    receiver.secret = sub.secret
    return sub


def rename_first_user(school: Path, name: str) -> None:
    users = rows(school / "users.csv")
    users[1][8] = name
    write(school / "users.csv", users)


def make_due():
    Delivery.objects.exclude(next_attempt_at=None).update(next_attempt_at=timezone.now())


def test_an_applied_sync_is_announced_signed_with_its_counts_and_event_range(
    district, receiver, school
):
    sub = subscribed(district, receiver)
    sync = import_path(district, school)
    delivery = Delivery.objects.get()
    assert delivery.subscription == sub and delivery.delivered_at is None
    assert webhooks.send_due() == 1
    [got] = receiver.received
    batch = Batch.objects.get(sync_id=sync.pk)
    assert got["id"] == delivery.message_id
    assert got["data"]["type"] == "roster.changed"
    data = got["data"]["data"]
    assert data["sync"] == sync.pk and data["district"] == district.slug
    assert (data["from_seq"], data["to_seq"]) == (1, batch.last_seq)
    assert data["counts"]["users"] == {"created": 79}
    assert data["events"] == f"/api/districts/{district.slug}/events?after=0"
    delivery.refresh_from_db()
    assert delivery.delivered_at and delivery.next_attempt_at is None
    assert webhooks.send_due() == 0  # delivered once
    # A wrong secret does not verify.
    with pytest.raises(Exception, match="signature"):
        Webhook(webhooks.new_secret()).verify(
            delivery.body.encode(),
            {
                "webhook-id": delivery.message_id,
                "webhook-timestamp": got["timestamp"],
                "webhook-signature": Webhook(sub.secret).sign(
                    delivery.message_id, timezone.now(), delivery.body.encode()
                ),
            },
        )


def test_failures_are_retried_with_backoff_under_the_same_webhook_id(district, receiver, school):
    receiver.answers = [500, 503]
    subscribed(district, receiver)
    import_path(district, school)
    before = timezone.now()
    assert webhooks.send_due() == 0
    delivery = Delivery.objects.get()
    assert delivery.attempts == 1 and delivery.last_status == 500
    assert delivery.next_attempt_at >= before + timedelta(seconds=5)
    assert webhooks.send_due() == 0  # not due yet
    make_due()
    assert webhooks.send_due() == 0
    delivery.refresh_from_db()
    assert delivery.next_attempt_at >= timezone.now() + timedelta(minutes=4)
    make_due()
    assert webhooks.send_due() == 1
    assert [r["id"] for r in receiver.received] == [delivery.message_id] * 3
    assert list(receiver.processed) == [delivery.message_id]
    assert [a.status for a in delivery.log.all()] == [500, 503, 200]


def test_410_disables_the_subscription(district, receiver, school):
    receiver.answers = [410]
    sub = subscribed(district, receiver)
    import_path(district, school)
    webhooks.send_due()
    sub.refresh_from_db()
    assert not sub.active and "410" in sub.disabled_reason
    rename_first_user(school, "Changed")
    assert import_path(district, school).status == "applied"
    assert Delivery.objects.count() == 1 and webhooks.send_due() == 0
    assert len(receiver.received) == 1


def test_a_subscription_hears_only_of_the_entities_it_chose(district, receiver, school):
    subscribed(district, receiver, entities=["demographics"])
    import_path(district, school)  # creates demographics too
    rename_first_user(school, "Changed")  # changes a user only
    assert import_path(district, school).status == "applied"
    assert Delivery.objects.count() == 1


def test_a_held_sync_announces_nothing(district, receiver, school):
    subscribed(district, receiver)
    import_path(district, school)
    write(school / "users.csv", rows(school / "users.csv")[:2])
    assert import_path(district, school).status == "held"
    assert Delivery.objects.count() == 1


def _run(env: dict, *args: str) -> str:
    done = subprocess.run([ROSTERDROP, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sender_killed_after_delivery_delivers_again_once_per_webhook_id(
    tmp_path, receiver, migrated_data
):
    """kill -9 between an applied sync and its delivery: the delivery is in the outbox with
    the sync; a sender killed after the endpoint answered but before recording it sends the
    message again after restart, under the same webhook-id, and the endpoint processes it
    once."""
    shutil.copytree(migrated_data, tmp_path / "data")
    env = base_env(tmp_path / "data") | {"ROSTERDROP_WEBHOOK_CLAIM_SECONDS": "1"}
    _run(
        env, "district", "add", "springfield", "--name", "Springfield", "--format", "oneroster-1.1"
    )
    added = _run(env, "webhook", "add", "springfield", receiver.url)
    receiver.secret = added.split("secret ", 1)[1].strip()
    _run(env, "import", "--district", "springfield", str(SCHOOL_SMALL))
    assert receiver.received == []  # applied and queued; nothing sent without a sender
    flag = tmp_path / "paused"
    paused = {"ROSTERDROP_PAUSE_AT": "webhook-sent", "ROSTERDROP_PAUSE_FILE": str(flag)}
    sender = subprocess.Popen([ROSTERDROP, "webhook", "send", "--loop"], env=env | paused)
    try:
        _until(flag.exists)
        assert len(receiver.received) == 1  # the endpoint has it and answered 200...
        sender.send_signal(signal.SIGKILL)  # ...but the sender dies before recording that
        sender.wait(timeout=20)
        flag.unlink()
        sender = subprocess.Popen([ROSTERDROP, "webhook", "send", "--loop"], env=env)
        _until(lambda: len(receiver.received) == 2)
        _until(lambda: "delivered" in _run(env, "webhook", "log", "1"))
    finally:
        if sender.poll() is None:
            os.kill(sender.pid, signal.SIGTERM)
            sender.wait(timeout=20)
    first, again = receiver.received
    assert first["id"] == again["id"] and first["data"] == again["data"]
    assert list(receiver.processed) == [first["id"]]
    assert json.loads(json.dumps(first["data"]))["data"]["district"] == "springfield"


def test_subscriptions_and_their_delivery_log_over_the_api(district, receiver, school):
    from django.core.management import call_command
    from django.test import Client
    from web_fixtures import make_user

    from rosterdrop.districts.models import District

    def api(user) -> Client:
        out = io.StringIO()
        call_command("token", "create", user.username, stdout=out)
        return Client(headers={"Authorization": f"Bearer {out.getvalue().strip()}"})

    admin = api(make_user("data@springfield.test", district))
    base = f"/api/districts/{district.slug}/webhooks"
    bad = admin.post(base, {"url": receiver.url, "entities": ["pets"]}, "application/json")
    assert bad.status_code == 422
    made = admin.post(base, {"url": receiver.url}, "application/json")
    assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
    receiver.secret = made.json()["secret"]
    listed = admin.get(base).json()
    assert [w["url"] for w in listed] == [receiver.url] and "secret" not in listed[0]
    import_path(district, school)
    webhooks.send_due()
    hook = made.json()["id"]
    log = admin.get(f"/api/webhooks/{hook}/deliveries").json()["items"]
    assert log[0]["delivered_at"] and [a["status"] for a in log[0]["log"]] == [200]
    other = District.objects.create(slug="shelbyville", name="S", format="oneroster-1.1")
    stranger = api(make_user("data@shelbyville.test", other))
    assert stranger.get(f"/api/webhooks/{hook}/deliveries").status_code == 404
    assert stranger.delete(f"/api/webhooks/{hook}").status_code == 404
    assert admin.delete(f"/api/webhooks/{hook}").status_code == 204
    assert admin.get(base).json() == []
