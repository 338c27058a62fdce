"""The change feed: every applied sync's record-level events, written with the roster change,
numbered without gaps per district, paged by a cursor; expired cursors answer 410."""

import csv
import io
import itertools
import shutil
import threading
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
import web_fixtures
from conftest import DISTRICT_LARGE, SCHOOL_SMALL
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from helpers import rows, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.feed.events import RANGE_MIN
from rosterdrop.feed.events import read as read_feed
from rosterdrop.feed.models import Batch, Counter, CreatedRange, Event
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.syncs import import_path
from rosterdrop.oneroster.clients import create_client, issue_token
from rosterdrop.oneroster.package import write_package
from rosterdrop.roster.models import ENTITIES, MODELS

pytestmark = pytest.mark.django_db(transaction=True)


def api(user) -> Client:
    out = io.StringIO()
    call_command("token", "create", user.username, stdout=out)
    return Client(headers={"Authorization": f"Bearer {out.getvalue().strip()}"})


class Consumer:
    """A vendor's reader of the feed: follows it from a cursor and keeps its own copy of the
    roster, reading each created or updated record."""

    def __init__(self, client: Client, slug: str):
        self.client, self.slug = client, slug
        self.cursor = 0
        self.roster: dict[tuple[str, str], dict] = {}

    def follow(self, page_size: int = 37) -> int:
        read = 0
        while True:
            url = f"/api/districts/{self.slug}/events?after={self.cursor}&limit={page_size}"
            page = self.client.get(url).json()
            for event in page["events"]:
                assert event["seq"] == self.cursor + 1  # no gap, no repeat
                self.cursor = event["seq"]
                key = (event["entity"], event["sourced_id"])
                if event["action"] == "deleted":
                    self.roster.pop(key, None)
                else:
                    record = self.client.get(
                        f"/api/districts/{self.slug}/roster/{key[0]}/{key[1]}"
                    ).json()
                    assert record["status"] == "active", (event, record)
                    self.roster[key] = record["data"]
                read += 1
            assert page["next"] == self.cursor
            if not page["has_more"]:
                assert self.cursor == page["last_seq"]
                return read


def roster_of(district) -> dict[tuple[str, str], dict]:
    return {
        (entity, record.sourced_id): record.data
        for entity in ENTITIES
        for record in MODELS[entity].objects.filter(district=district, status="active")
    }


def _without(table: list[list[str]], column: str, value: str) -> list[list[str]]:
    at = table[0].index(column)
    return [table[0]] + [row for row in table[1:] if row[at] != value]


@pytest.mark.slow
def test_a_consumer_following_the_feed_through_20_syncs_ends_with_the_roster(
    district, operator, school
):
    consumer = Consumer(api(operator), district.slug)
    assert import_path(district, school).status == "applied"
    first = consumer.follow()
    assert first == sum(MODELS[e].objects.filter(district=district).count() for e in ENTITIES)
    users_csv, enrollments_csv = school / "users.csv", school / "enrollments.csv"
    demographics_csv = school / "demographics.csv"
    removed: list[list[str]] = []
    for step in range(20):
        users, enrollments = rows(users_csv), rows(enrollments_csv)
        # A new student, enrolled in the first enrollment's class.
        new = list(users[-1])
        new[0], new[5], new[6] = f"new-student-{step}", "student", f"new.student.{step}"
        users.append(new)
        enrolled = list(enrollments[1])
        enrolled[0], enrolled[5], enrolled[6:8] = f"new-enrollment-{step}", new[0], ["student", ""]
        enrollments.append(enrolled)
        # A changed name.
        users[2 + step][8] = f"Renamed{step}"
        # A student removed, with what refers to it; every fifth sync one comes back.
        if step % 5 == 4 and removed:
            users.append(removed.pop(0))
        else:
            gone = users.pop(30 + step)
            removed.append(gone)
            enrollments = _without(enrollments, "userSourcedId", gone[0])
            write(demographics_csv, _without(rows(demographics_csv), "sourcedId", gone[0]))
        write(users_csv, users)
        write(enrollments_csv, enrollments)
        sync = import_path(district, school)
        assert sync.status == "applied", (step, sync.message)
        read = consumer.follow(page_size=1 + step * 7)
        assert read > 0
        assert consumer.roster == roster_of(district), step
    counter = Counter.objects.get(pk=district.pk)
    feed = read_feed(district.pk, 0, 10**9)
    assert consumer.cursor == counter.last_seq == len(feed)
    assert [e["seq"] for e in feed] == list(range(1, counter.last_seq + 1))
    # Each sync's batch: consecutive ranges whose counts add up to its events.
    batches = list(Batch.objects.filter(district=district))
    assert len(batches) == 21 and batches[0].first_seq == 1
    assert all(a.last_seq + 1 == b.first_seq for a, b in zip(batches, batches[1:], strict=False))
    sizes = [sum(n for per in b.counts.values() for n in per.values()) for b in batches]
    assert sizes == [b.last_seq - b.first_seq + 1 for b in batches]
    assert {e["action"] for e in feed} == {"created", "updated", "deleted"}


def test_a_sync_that_changes_nothing_or_is_held_writes_no_events(district, school):
    import_path(district, school)
    before = Counter.objects.get(pk=district.pk).last_seq
    assert import_path(district, school).status in ("no_changes", "applied")
    users = rows(school / "users.csv")
    write(school / "users.csv", users[:2])  # nearly everyone removed: held for approval
    held = import_path(district, school)
    assert held.status == "held"
    assert Counter.objects.get(pk=district.pk).last_seq == before
    assert len(read_feed(district.pk, 0, 10**9)) == before


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's statistics")
def test_postgresql_makes_the_events_statistics_again_after_a_sync_that_wrote_many(
    district, school, monkeypatch
):
    """A sync that wrote many event rows (here: any, and more than a tenth of the table) has
    the table analyzed after its commit: without statistics a feed page read every event row
    of the district and sorted them (bench/README.md, users22)."""
    from rosterdrop.feed import events

    monkeypatch.setattr(events, "ANALYZE_WRITTEN_MIN", 1)

    def analyzed() -> int:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = %s::regclass",
                [Event._meta.db_table],
            )
            return cur.fetchone()[0]

    import_path(district, school)
    users = rows(school / "users.csv")
    given = users[0].index("givenName")
    for row in users[1:]:
        row[given] += "x"
    write(school / "users.csv", users)
    before = analyzed()
    assert import_path(district, school).status == "applied"
    assert Event.objects.filter(district=district, action="updated").count() == len(users) - 1
    assert analyzed() == before + 1
    assert import_path(district, school).status == "no_changes"  # wrote none
    assert analyzed() == before + 1


def test_an_expired_cursor_answers_410(district, operator, school, settings):
    settings.FEED_RETENTION_DAYS = 30
    client = api(operator)
    first = import_path(district, school)
    old = Counter.objects.get(pk=district.pk).last_seq
    Batch.objects.filter(sync_id=first.pk).update(applied_at=timezone.now() - timedelta(days=31))
    users = rows(school / "users.csv")
    users[1][8] = "Changed"
    write(school / "users.csv", users)
    assert import_path(district, school).status == "applied"
    gone = client.get(f"/api/districts/{district.slug}/events?after=0")
    assert gone.status_code == 410 and gone.json()["oldest_after"] == old
    assert client.get(f"/api/districts/{district.slug}/events?after={old - 1}").status_code == 410
    kept = client.get(f"/api/districts/{district.slug}/events?after={old}").json()
    assert [e["action"] for e in kept["events"]] == ["updated"]
    assert kept["events"][0]["seq"] == old + 1 and not kept["has_more"]
    assert not Event.objects.filter(district=district, seq__lte=old).exists()
    assert not CreatedRange.objects.filter(district=district, first_seq__lte=old).exists()


def test_the_feed_is_only_for_the_districts_of_the_token(district, school, db):
    from rosterdrop.districts.models import District

    import_path(district, school)
    other = District.objects.create(slug="shelbyville", name="S", format="oneroster-1.1")
    theirs = web_fixtures.make_user("data@shelbyville.test", other)
    assert api(theirs).get(f"/api/districts/{district.slug}/events").status_code == 404
    assert Client().get(f"/api/districts/{district.slug}/events").status_code == 401


class Paused(io.BytesIO):
    """The export's output: its first write (the first file, once read) waits until told to
    go on, so that a sync can commit while the export is still reading."""

    def __init__(self):
        super().__init__()
        self.reading, self.go = threading.Event(), threading.Event()

    def write(self, data) -> int:
        if not self.reading.is_set():
            self.reading.set()
            assert self.go.wait(120)
        return super().write(data)


def users_in(package: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return {r[0] for r in list(csv.reader(io.StringIO(zf.read("users.csv").decode())))[1:]}


def test_a_consumer_starts_from_an_export_and_follows_the_feed_from_its_cursor(
    district, operator, school
):
    """The export is read in one state of the roster even while a sync commits beside it,
    and says which event that state ends with: the feed from there has each later change
    once, and none the export already holds."""
    assert import_path(district, school).status == "applied"
    before = {u for (entity, u) in roster_of(district) if entity == "users"}
    cursor_before = Counter.objects.get(pk=district.pk).last_seq
    out, done = Paused(), {}

    def export() -> None:
        try:
            done["written"] = write_package(district, out)
        finally:
            connection.close()

    thread = threading.Thread(target=export)
    thread.start()
    assert out.reading.wait(120)
    # While the export reads: a student leaves, a new one comes.
    users = rows(school / "users.csv")
    gone = users.pop(5)[0]
    new = list(users[-1])
    new[0], new[6] = "new-student", "new.student"
    write(school / "users.csv", [*users, new])
    for name, column in (("enrollments.csv", "userSourcedId"), ("demographics.csv", "sourcedId")):
        write(school / name, _without(rows(school / name), column, gone))
    sync = import_path(district, school)
    assert sync.status == "applied", sync.message
    out.go.set()
    thread.join(120)
    written = done["written"]
    package = out.getvalue()
    assert written.cursor == cursor_before < Counter.objects.get(pk=district.pk).last_seq
    assert users_in(package) == before  # all of it from the state before the sync
    assert (
        zipfile.ZipFile(io.BytesIO(package)).comment
        == f"X-Roster-Cursor: {written.cursor}".encode()
    )
    # The consumer follows the feed from the cursor: the sync's events, each once.
    page = (
        api(operator)
        .get(f"/api/districts/{district.slug}/events?after={written.cursor}&limit=10000")
        .json()
    )
    assert page["events"][0]["seq"] == written.cursor + 1 and not page["has_more"]
    assert {e["sync"] for e in page["events"]} == {sync.pk}
    followed = users_in(package)
    for event in page["events"]:
        if event["entity"] == "users":
            (followed.discard if event["action"] == "deleted" else followed.add)(
                event["sourced_id"]
            )
    assert followed == {u for (entity, u) in roster_of(district) if entity == "users"}
    assert gone not in followed and "new-student" in followed
    # The REST service says the same of what it answers.
    client, secret = create_client("reader", district, [])
    bearer = issue_token(client.client_id, secret, "").token
    answer = Client(headers={"Authorization": f"Bearer {bearer}"}).get(
        f"/oneroster/{district.slug}/ims/oneroster/rostering/v1p2/users?limit=1"
    )
    assert answer["X-Roster-Cursor"] == str(page["last_seq"])


@pytest.mark.parametrize(
    ("ids", "updated_id", "window"),
    [((7, 8, 9, 10), 11, False), ((7, 9, 12, 13), 10, True)],
    ids=["consecutive", "gaps"],
)
def test_created_events_are_numbered_in_id_order_without_a_window_where_ids_follow(
    district, ids, updated_id, window
):
    """The records a sync first saw get events numbered without gaps in ID order: on SQLite
    from the ID offset when the IDs are consecutive (as one writer appends them), by
    ROW_NUMBER when they are not; a record the sync only updated gets no created event."""
    from django.db import transaction

    from rosterdrop.feed.events import record_events
    from rosterdrop.ingest.models import Change
    from rosterdrop.roster.models import User

    sync_id = 5
    common = {"district": district, "content_hash": 0, "changed_sync_id": sync_id}
    for n, row_id in enumerate(ids):
        User.objects.create(id=row_id, sourced_id=f"u{n}", first_seen_sync_id=sync_id, **common)
    User.objects.create(id=updated_id, sourced_id="old", first_seen_sync_id=1, **common)
    statements: list[str] = []
    with transaction.atomic(), connection.cursor() as wrapper:
        if connection.vendor == "sqlite":
            wrapper.connection.set_trace_callback(statements.append)
        try:
            record_events(wrapper.cursor, district.pk, sync_id, {}, Change)
        finally:
            if connection.vendor == "sqlite":
                wrapper.connection.set_trace_callback(None)
    events = list(Event.objects.filter(district=district).order_by("seq"))
    assert [(e.seq, e.sourced_id, e.action) for e in events] == [
        (n, f"u{n - 1}", "created") for n in range(1, len(ids) + 1)
    ]
    if connection.vendor == "sqlite":
        windows = [s for s in statements if "ROW_NUMBER" in s and "roster_user" in s]
        assert bool(windows) == window, windows


class Recording:
    """A DB-API cursor that keeps each statement it runs, then runs it."""

    def __init__(self, cursor):
        self.cursor, self.statements = cursor, []

    def execute(self, sql, params=None):
        self.statements.append(sql)
        return self.cursor.execute(sql, params)

    def executemany(self, sql, params):
        self.statements.append(sql)
        return self.cursor.executemany(sql, params)

    def __getattr__(self, name):
        return getattr(self.cursor, name)


def recorded_events(monkeypatch) -> list[str]:
    """The statements of every record_events from now on in this test."""
    from rosterdrop.ingest import engine

    statements: list[str] = []
    real = engine.record_events

    def recording(cur, *args):
        cursor = Recording(cur)
        try:
            return real(cursor, *args)
        finally:
            statements.extend(cursor.statements)

    monkeypatch.setattr(engine, "record_events", recording)
    return statements


def created_in_id_order(district, sync_id: int) -> list[tuple[str, str]]:
    """What a sync's created events say, in the order the feed promises: entity by entity,
    each entity's records first seen in the sync in ID order."""
    return [
        (entity, key)
        for entity in ENTITIES
        for key in MODELS[entity]
        .objects.filter(district=district, first_seen_sync_id=sync_id)
        .order_by("id")
        .values_list("sourced_id", flat=True)
    ]


def test_a_first_import_numbers_its_created_events_from_record_ids_on_both_engines(
    district, monkeypatch
):
    """A first import's events are its records, entity by entity in ID order, numbered from 1
    without a gap; its new records' IDs follow one another on both engines (one writer on
    SQLite, one session taking them from the sequence on PostgreSQL), so each event's number
    is its record's ID offset: the events are kept as a range per entity, not a row each,
    with no ROW_NUMBER window over millions of rows."""
    statements = recorded_events(monkeypatch)
    sync = import_path(district, DISTRICT_LARGE)
    assert sync.status == "applied"
    events = read_feed(district.pk, 0, 10**9)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {(e["action"], e["sync_id"]) for e in events} == {("created", sync.pk)}
    assert [(e["entity"], e["sourced_id"]) for e in events] == created_in_id_order(
        district, sync.pk
    )
    assert len(events) > 40_000
    per_entity = {
        entity: n for entity in ENTITIES if (n := [e["entity"] for e in events].count(entity))
    }
    ranged = {entity for entity, n in per_entity.items() if n >= RANGE_MIN}
    assert (
        set(CreatedRange.objects.filter(district=district).values_list("entity", flat=True))
        == ranged
    )
    rows_written = Event.objects.filter(district=district).count()
    assert rows_written == sum(n for entity, n in per_entity.items() if entity not in ranged)
    assert rows_written < 1000
    windows = [s for s in statements if "ROW_NUMBER" in s and "roster_" in s]
    assert windows == []


# The enrollments a sequence of syncs plays with (as test_oneroster_renames does): each is
# absent, or sent under one of a few IDs with the same class, person and role (another one
# renames it), its end date as in the sample or changed.
PLAYED = 6
# The enrollments after them the test keeps: enough for records of the range after the played
# ones, and for the 6 played removed at once to stay within the 10% a sync may remove unheld.
# (The sample's 540 made two thirds of the events, the feed read through the API a page at a
# time after every sync: 87% of the test's time went on those pages.)
KEPT_AFTER = 60
SENT = st.tuples(*[st.tuples(st.sampled_from([None, 0, 1, 2]), st.booleans())] * PLAYED)
feeds = itertools.count()
# What a sync's webhook message says of its events (webhooks.message).
BATCH = ("first_seq", "last_seq", "counts")


def played_files(folder: Path, table: list[list[str]], sent: tuple) -> Path:
    """The small school with its first PLAYED enrollments as `sent` says (`table`: the ones
    after them that it keeps)."""
    if not folder.exists():
        shutil.copytree(SCHOOL_SMALL, folder)
    played = [
        [f"{row[0]}-{i}" if i else row[0], *row[1:-1], "2026-06-30" if changed else row[-1]]
        for row, (i, changed) in zip(table[1 : PLAYED + 1], sent, strict=True)
        if i is not None
    ]
    write(folder / "enrollments.csv", [table[0], *played, *table[PLAYED + 1 :]])
    return folder


def whole_feed(client: Client, slug: str, limit: int) -> list[dict]:
    """Every page of the district's feed through the API, `limit` events a page, with the
    syncs named by their order in the district and without the times they were applied."""
    syncs = {
        sync_id: n
        for n, sync_id in enumerate(
            Sync.objects.filter(district__slug=slug).order_by("id").values_list("id", flat=True)
        )
    }
    pages, after = [], 0
    while True:
        answer = client.get(f"/api/districts/{slug}/events?after={after}&limit={limit}")
        assert answer.status_code == 200
        page = answer.json()
        for event in page["events"]:
            assert event.pop("applied_at")
            event["sync"] = syncs[event["sync"]]
        pages.append(page)
        if not page["has_more"]:
            return pages
        after = page["next"]


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(syncs=st.lists(SENT, min_size=1, max_size=5), limit=st.integers(1, 60))
def test_created_ranges_read_as_a_row_per_record_does(
    tmp_path, operator, monkeypatch, syncs, limit
):
    """Two districts take the same syncs (a first import, then enrollments added, removed,
    changed, sent back and renamed, the records of a range among them): one keeps its created
    events as ranges wherever their IDs follow one another (from a single record), the other
    as a row per record, as the feed did before ranges. After each sync, every page of the
    feed read through the API, with its cursor and event order and content, and each sync's
    batch (what its webhook says), are the same in both."""
    from rosterdrop.districts.models import District
    from rosterdrop.feed import events

    client, n = api(operator), next(feeds)
    table = rows(SCHOOL_SMALL / "enrollments.csv")[: 1 + PLAYED + KEPT_AFTER]
    kept = {}
    for kind, fewest in (("ranges", 1), ("rows", 10**9)):
        slug = f"feed-{kind}-{n}"
        kept[slug] = fewest
        District.objects.create(slug=slug, name=slug, format="oneroster-1.1")
    for sent in syncs:
        for slug, fewest in kept.items():
            monkeypatch.setattr(events, "RANGE_MIN", fewest)
            district = District.objects.get(slug=slug)
            sync = import_path(district, played_files(tmp_path / slug, table, sent))
            assert sync.status in ("applied", "no_changes"), sync.message
        ranged, per_row = (whole_feed(client, slug, limit) for slug in kept)
        assert ranged == per_row
        ranged, per_row = (
            list(Batch.objects.filter(district__slug=slug).values_list(*BATCH)) for slug in kept
        )
        assert ranged == per_row
    ranged, per_row = (CreatedRange.objects.filter(district__slug=slug) for slug in kept)
    assert ranged.exists() and not per_row.exists()


def test_a_page_is_read_in_one_state_while_a_sync_commits(district, operator, school, monkeypatch):
    """A sync writes its renames' events as rows before its created events' range: a page
    read while it commits (here between the reader's event rows and its ranges) holds all of
    it or none, never the range without the rows before it (a gap the cursor would skip)."""
    from rosterdrop.feed import events

    monkeypatch.setattr(events, "RANGE_MIN", 1)
    assert import_path(district, school).status == "applied"
    after = Counter.objects.get(pk=district.pk).last_seq
    enrollments = rows(school / "enrollments.csv")
    enrollments[1][0] += "-renamed"
    write(school / "enrollments.csv", enrollments)
    users = rows(school / "users.csv")
    new = list(users[-1])
    new[0], new[6] = "new-student", "new.student"
    write(school / "users.csv", [*users, new])
    real, reader = events.CreatedRange, threading.get_ident()

    def sync() -> None:
        try:
            assert import_path(district, school).status == "applied"
        finally:
            connection.close()

    class Committing:
        """CreatedRange, whose first use by the reader waits for the sync to commit."""

        def __getattr__(self, name):
            if threading.get_ident() == reader and not committed:
                committed.append(True)
                thread = threading.Thread(target=sync)
                thread.start()
                thread.join(120)
            return getattr(real, name)

    committed: list[bool] = []
    monkeypatch.setattr(events, "CreatedRange", Committing())
    page = api(operator).get(f"/api/districts/{district.slug}/events?after={after}").json()
    assert committed
    assert Counter.objects.get(pk=district.pk).last_seq > after + 2
    assert [e["seq"] for e in page["events"]] == list(
        range(after + 1, after + 1 + len(page["events"]))
    )
