"""Writing a sync's events in the transaction that applies it, and keeping them for the
retention time.

The events are copied by the database from what apply has just written (INSERT ... SELECT,
numbered in ID order): records first seen in the sync were created, its change rows say
what was updated, removed (deleted) or came back (created). No row passes through Python,
however many millions a first import writes.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, models
from django.db.models import Count, Max
from django.utils import timezone

from rosterdrop.feed import webhooks
from rosterdrop.feed.models import Batch, Counter, Event
from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES, MODELS
from rosterdrop.roster.schema import KEY
from rosterdrop.timing import timed

COLUMNS = "district_id, seq, sync_id, entity, sourced_id, action"
# What a change row of ingest means to a feed reader.
ACTIONS = {"updated": "updated", "removed": "deleted", "reactivated": "created"}


@timed("record_events")
def record_events(
    cur, district_id: int, sync_id: int, renamed: dict[str, list], changes: type[models.Model]
) -> Batch | None:
    """Write the sync's events after apply, in its transaction; their batch (None if none).

    `renamed`: {entity: [(old ID, new ID)]}, records apply moved to a new source ID: the old
    one is deleted for a reader, the new one created. `changes`: the model of the importer's
    change rows (sync_id, entity, sourced_id, action), handed over by ingest so that the feed,
    a layer below it, never imports ingest.
    """
    counter = _locked_counter(district_id)
    first = seq = counter.last_seq
    counts: dict[str, dict[str, int]] = {}

    def count(entity: str, action: str, n: int) -> None:
        if n > 0:
            per = counts.setdefault(entity, {})
            per[action] = per.get(action, 0) + n

    p = "%s" if connection.vendor == "postgresql" else "?"
    insert = f"INSERT INTO {Event._meta.db_table} ({COLUMNS}) "
    moved = [
        (entity, key, action)
        for entity, pairs in renamed.items()
        for old, new in pairs
        for key, action in ((old, "deleted"), (new, "created"))
    ]
    cur.executemany(
        f"{insert} VALUES ({', '.join([p] * 6)})",
        [(district_id, seq + n, sync_id, *row) for n, row in enumerate(moved, start=1)],
    )
    seq += len(moved)
    for entity, _, action in moved:
        count(entity, action, 1)
    ends = {entity: _ends(cur, district_id, sync_id, entity) for entity in ENTITIES}
    adding = sum(high - low + 1 for low, high in filter(None, ends.values()))
    with _key_built_after(cur, district_id, adding, counter.last_seq - counter.pruned_through):
        for entity in ENTITIES:
            created = _created(cur, district_id, sync_id, entity, seq, ends[entity])
            seq += created
            count(entity, "created", created)
    for change, action in ACTIONS.items():
        cur.execute(
            f"{insert} SELECT {p}, {p} + ROW_NUMBER() OVER (ORDER BY id), sync_id, entity, "
            f"sourced_id, {p} FROM {changes._meta.db_table} WHERE sync_id = {p} AND action = {p}",
            [district_id, seq, action, sync_id, change],
        )
        seq += max(cur.rowcount, 0)
    changed = changes._default_manager.filter(sync_id=sync_id).values("entity", "action")
    for row in changed.annotate(n=Count("id")).order_by():
        count(row["entity"], ACTIONS[row["action"]], row["n"])
    _prune(district_id)
    if seq == first:
        return None
    Counter.objects.filter(pk=district_id).update(last_seq=seq)
    batch = Batch.objects.create(
        district_id=district_id,
        sync_id=sync_id,
        first_seq=first + 1,
        last_seq=seq,
        applied_at=timezone.now(),
        counts=counts,
    )
    webhooks.announce(batch)
    return batch


def _first_seen(district_id: int, sync_id: int, entity: str) -> tuple[str, list[int]]:
    """FROM and WHERE of the entity's records first seen in the sync, and its parameters.

    They are found through the entity's `first_seen` index (district, first_seen_sync_id,
    id): only what the sync added is walked, not every record of the district. (A record
    first seen in a sync was last changed by it while that sync applies.)
    """
    p = "%s" if connection.vendor == "postgresql" else "?"
    rows = (
        f"FROM {MODELS[entity]._meta.db_table} "
        f"WHERE district_id = {p} AND first_seen_sync_id = {p} AND changed_sync_id = {p}"
    )
    return rows, [district_id, sync_id, sync_id]


def _ends(cur, district_id: int, sync_id: int, entity: str) -> tuple[int, int] | None:
    """The lowest and highest ID of the entity's records first seen in the sync (None: none)."""
    rows, keys = _first_seen(district_id, sync_id, entity)
    ends = []
    for order in ("", " DESC"):  # each stops at its first row (MIN and MAX would walk all)
        cur.execute(f"SELECT id {rows} ORDER BY id{order} LIMIT 1", keys)
        ends.append(cur.fetchone())
    if ends[0] is None:
        return None
    (low,), (high,) = ends
    return low, high


def _created(
    cur, district_id: int, sync_id: int, entity: str, after: int, ends: tuple[int, int] | None
) -> int:
    """Write the events of the entity's records first seen in the sync (`ends`: their lowest
    and highest ID), numbered from `after` + 1 in ID order; return how many.

    The sync's new records of an entity have consecutive IDs where its one writer appended
    them (SQLite), or took them from the table's sequence while nobody else did (PostgreSQL):
    then each event's number is its record's ID offset. ROW_NUMBER's window would first copy
    every row aside (measured on 500k enrollments, SQLite: 1.9 s CPU with it, 0.84 s without;
    2.7M records on PostgreSQL: 4.5 s of server CPU with it, 3.7 s without). Should the IDs
    not be consecutive after all, those events are taken back and numbered by ROW_NUMBER.
    """
    if ends is None:
        return 0
    low, high = ends
    p = "%s" if connection.vendor == "postgresql" else "?"
    rows, keys = _first_seen(district_id, sync_id, entity)
    insert = f"INSERT INTO {Event._meta.db_table} ({COLUMNS}) SELECT district_id, "
    values = f", first_seen_sync_id, {p}, sourced_id, 'created' {rows}"
    cur.execute(f"{insert}{p} + id - {p}{values} ORDER BY id", [after + 1, low, entity, *keys])
    if cur.rowcount == high - low + 1:
        return high - low + 1
    cur.execute(
        f"DELETE FROM {Event._meta.db_table} WHERE district_id = {p} AND seq > {p}",
        [district_id, after],
    )
    cur.execute(f"{insert}{p} + ROW_NUMBER() OVER (ORDER BY id){values}", [after, entity, *keys])
    return max(cur.rowcount, 0)


# A sync's created events go into an event table without its primary key, built after them,
# from this many (PostgreSQL: see _key_built_after).
KEY_AFTER_MIN = 100_000


@contextmanager
def _key_built_after(cur, district_id: int, adding: int, held: int) -> Iterator[None]:
    """Around the writes of `adding` created events: on PostgreSQL, when they are many and
    outnumber the `held` events the district keeps, the event table's primary key is dropped
    first and built after them, in the same transaction, as roster/store.lookups_built_after
    does for roster tables and under the same rule: only when the table holds no other
    district's events and nobody is using it at that moment (its DROP locks every reader of
    the table out until the commit). Measured, 2.7M events at `large`: 3.7 s of server CPU
    with the key in place, 2.6 s without it and 0.5 s to build it after.
    """
    name = Event._meta.db_table
    if (
        connection.vendor != "postgresql"
        or adding < KEY_AFTER_MIN
        or adding <= held
        or not store.take_table(cur, name, district_id)
    ):
        yield
        return
    cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'p'",
        [name],
    )
    key, definition = cur.fetchone()
    cur.execute(f'ALTER TABLE {name} DROP CONSTRAINT "{key}"')
    yield
    cur.execute(f"SET LOCAL maintenance_work_mem = '{store.BUILD_MEMORY}'")
    cur.execute(f'ALTER TABLE {name} ADD CONSTRAINT "{key}" {definition}')


def renamed_in(plan) -> dict[str, list[tuple[str, str]]]:
    """{entity: [(old ID, new ID)]} of an ingest plan's renamed records."""
    return {
        entity: list(ep.renamed.select("_old_key", KEY).iter_rows())
        for entity, ep in plan.entities.items()
        if ep.renamed.height
    }


def last_seq(district_id: int) -> int:
    """The number of the district's last event (0: none yet)."""
    found = Counter.objects.filter(pk=district_id).values_list("last_seq", flat=True).first()
    return found or 0


def _locked_counter(district_id: int) -> Counter:
    Counter.objects.get_or_create(pk=district_id)
    return Counter.objects.select_for_update().get(pk=district_id)


def _prune(district_id: int) -> None:
    """Delete the events of syncs applied longer than the retention time ago."""
    cutoff = timezone.now() - timedelta(days=settings.FEED_RETENTION_DAYS)
    old = Batch.objects.filter(district_id=district_id, applied_at__lt=cutoff)
    last = old.aggregate(last=Max("last_seq"))["last"]
    if last is None:
        return
    Event.objects.filter(district_id=district_id, seq__lte=last).delete()
    old.delete()
    Counter.objects.filter(pk=district_id, pruned_through__lt=last).update(pruned_through=last)
