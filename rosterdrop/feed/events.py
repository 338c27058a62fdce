"""Writing a sync's events in the transaction that applies it, reading them, and keeping
them for the retention time.

The events are copied by the database from what apply has just written (INSERT ... SELECT,
numbered in ID order): records first seen in the sync were created, its change rows say
what was updated, removed (deleted) or came back (created). No row passes through Python,
however many millions a first import writes; and a sync's created records of an entity,
whose IDs follow one another, are kept as one range (models.CreatedRange) that `read` turns
into their events, exactly those a row per record would be.
"""

from bisect import bisect_right
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType

import polars as pl
from django.conf import settings
from django.db import connection, models
from django.db.models import Count, Max
from django.utils import timezone

from rosterdrop.feed import webhooks
from rosterdrop.feed.models import Batch, Counter, CreatedRange, Event
from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES, MODELS
from rosterdrop.roster.schema import KEY
from rosterdrop.timing import timed

COLUMNS = "district_id, seq, sync_id, entity, sourced_id, action"
# What a change row of ingest means to a feed reader.
ACTIONS = {"updated": "updated", "removed": "deleted", "reactivated": "created"}
# PostgreSQL: a sync that wrote at least this many event rows, and more than this share of
# what the table held, makes the table's statistics again after its commit (`refresh_statistics`).
ANALYZE_WRITTEN_MIN = 10_000
ANALYZE_WRITTEN_SHARE = 0.1


@timed("record_events")
def record_events(
    cur,
    district_id: int,
    sync_id: int,
    renamed: dict[str, list],
    changes: type[models.Model],
    created: Mapping[str, tuple[int, int]] = MappingProxyType({}),
) -> int:
    """Write the sync's events after apply, in its transaction, and their batch (none if no
    event); how many event rows it wrote (created records kept as ranges are not rows).

    `renamed`: {entity: [(old ID, new ID)]}, records apply moved to a new source ID: the old
    one is deleted for a reader, the new one created. `changes`: the model of the importer's
    change rows (sync_id, entity, sourced_id, action), handed over by ingest so that the feed,
    a layer below it, never imports ingest. `created`: {entity: (first row ID, how many)}
    where the sync's created records are known to be those, consecutive (a first import's
    records copied whole), so that they need not be counted.
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
    written = len(moved)
    for entity, _, action in moved:
        count(entity, action, 1)
    _keep_renamed(cur, district_id, renamed)
    for entity in ENTITIES:
        n = _created(cur, district_id, sync_id, entity, seq, created.get(entity))
        seq += n
        count(entity, "created", n)
    for change, action in ACTIONS.items():
        cur.execute(
            f"{insert} SELECT {p}, {p} + ROW_NUMBER() OVER (ORDER BY id), sync_id, entity, "
            f"sourced_id, {p} FROM {changes._meta.db_table} WHERE sync_id = {p} AND action = {p}",
            [district_id, seq, action, sync_id, change],
        )
        seq += max(cur.rowcount, 0)
        written += max(cur.rowcount, 0)
    changed = changes._default_manager.filter(sync_id=sync_id).values("entity", "action")
    for row in changed.annotate(n=Count("id")).order_by():
        count(row["entity"], ACTIONS[row["action"]], row["n"])
    _prune(district_id)
    if seq == first:
        return 0
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
    return written


def refresh_statistics(written: int) -> None:
    """PostgreSQL, after the commit of a sync that wrote many event rows (`written`) compared
    with what the table held: its statistics made again. Without them a feed page after the
    first 1% change read every event row of the district and sorted them (a bitmap scan: 70k
    rows at `large`, 23-127 ms a page) instead of its 100 from the index (0.1 ms); autovacuum
    catches up only later, and only where it runs. Not in the sync's transaction: two syncs'
    ANALYZE of the one table would wait for each other's commit."""
    if connection.vendor != "postgresql" or written < ANALYZE_WRITTEN_MIN:
        return
    with connection.cursor() as cur:
        cur.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [Event._meta.db_table]
        )
        (held,) = cur.fetchone()
        if held < 0 or written > ANALYZE_WRITTEN_SHARE * held:
            cur.execute(f"ANALYZE {Event._meta.db_table}")


def _first_seen(district_id: int, sync_id: int, entity: str) -> tuple[str, list[int]]:
    """FROM and WHERE of the entity's records first seen in the sync, and its parameters.

    They are found through the entity's `first_seen` index (district, first_seen_sync_id,
    id) alone, no record read: only what the sync added is walked, not every record of the
    district. Apply gives a sync's number only to the records it inserts
    (store.new_record_columns); the row a rename leaves under the old ID keeps its record's,
    an earlier sync's. (Also asking that the sync last changed them, as a record first seen
    in a sync is while it applies, read every record's page: 0.42 s of CPU for 2M
    enrollments on SQLite, 0.19 without.)
    """
    p = "%s" if connection.vendor == "postgresql" else "?"
    rows = (
        f"FROM {MODELS[entity]._meta.db_table} WHERE district_id = {p} AND first_seen_sync_id = {p}"
    )
    return rows, [district_id, sync_id]


# A sync's created records of an entity are kept as one CreatedRange from this many, their IDs
# consecutive (fewer: an event row each, like every other event).
RANGE_MIN = 100


def _created(
    cur, district_id: int, sync_id: int, entity: str, after: int, known: tuple[int, int] | None
) -> int:
    """Keep the events of the entity's records first seen in the sync, numbered from `after`
    + 1 in ID order; return how many. `known`: their first ID and how many, consecutive,
    where the caller knows them (else counted: with no index on the records first seen, as
    after a first import's copy, a scan of the table, ~1.1 s of server CPU at `huge`).

    The sync's new records of an entity have consecutive IDs where its one writer appended
    them (SQLite), or took them from the table's sequence while nobody else did (PostgreSQL):
    then each event's number is its record's ID offset, and the events are kept as one
    CreatedRange, read from the records when the feed is read (a first import at `huge`
    wrote 6.8M event rows: ~7.5 s of CPU on either engine). Should the IDs not be
    consecutive after all, each event is a row numbered by ROW_NUMBER (whose window copies
    every row aside: 4.5 s of server CPU for 2.7M records, which is why it is the fallback).
    """
    p = "%s" if connection.vendor == "postgresql" else "?"
    rows, keys = _first_seen(district_id, sync_id, entity)
    if known is None:
        cur.execute(f"SELECT count(*), MIN(id), MAX(id) {rows}", keys)
        n, low, high = cur.fetchone()
    else:
        (low, n), high = known, known[0] + known[1] - 1
    if not n:
        return 0
    consecutive = n == high - low + 1
    if consecutive and n >= RANGE_MIN:
        CreatedRange.objects.create(
            district_id=district_id,
            sync_id=sync_id,
            entity=entity,
            first_seq=after + 1,
            last_seq=after + n,
            first_id=low,
        )
        return n
    number, at = (
        (f"{p} + id - {p}", [after + 1, low])
        if consecutive
        else (f"{p} + ROW_NUMBER() OVER (ORDER BY id)", [after])
    )
    cur.execute(
        f"INSERT INTO {Event._meta.db_table} ({COLUMNS}) SELECT district_id, {number}, "
        f"first_seen_sync_id, {p}, sourced_id, 'created' {rows} ORDER BY id",
        [*at, entity, *keys],
    )
    return n


def _keep_renamed(cur, district_id: int, renamed: dict[str, list[tuple[str, str]]]) -> None:
    """Write as rows the created events that ranges hold of the records the sync renamed.

    A range's event reads its record's sourced ID when the feed is read, and a rename changes
    that ID in place (store.rename_records, which apply has just run), but the event said
    the ID the record was created with: the old one of the pair, since any earlier rename
    wrote the row already (and this one then writes nothing). The row takes the place of the
    range's event with its number (`read`), so the feed shows what a row per record showed.
    """
    for entity, pairs in renamed.items():
        ranges = sorted(
            CreatedRange.objects.filter(district_id=district_id, entity=entity).values_list(
                "first_id", "first_seq", "last_seq", "sync_id"
            )
        )
        if not ranges:
            continue
        old_of = dict((new, old) for old, new in pairs)
        listed = store.listed(cur, "rd_feed_renamed", pl.Series(list(old_of)))
        cur.execute(
            f"SELECT id, sourced_id FROM {store.table(entity)} WHERE district_id = "
            f"{int(district_id)} AND sourced_id IN (SELECT _key FROM {listed})"
        )
        starts = [first_id for first_id, *_ in ranges]
        kept = []
        for row_id, key in cur.fetchall():
            at = bisect_right(starts, row_id) - 1  # the range starting at or before the row
            if at < 0:
                continue
            first_id, first_seq, last_seq, sync_id = ranges[at]
            seq = first_seq + row_id - first_id
            if seq <= last_seq:
                kept.append((district_id, seq, sync_id, entity, old_of[key], "created"))
        p = "%s" if connection.vendor == "postgresql" else "?"
        cur.executemany(
            f"INSERT INTO {Event._meta.db_table} ({COLUMNS}) VALUES ({', '.join([p] * 6)}) "
            "ON CONFLICT (district_id, seq) DO NOTHING",
            kept,
        )


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


def read(district_id: int, after: int, limit: int) -> list[dict]:
    """The district's first `limit` events after `after`, oldest first ({seq, sync_id,
    entity, sourced_id, action}): its event rows and its ranges' created events, read from
    their records; where a row and a range have an event of the same number, the row's. All
    read in one state of the database: a sync that commits meanwhile adds rows before its
    range, and renames records a range reads."""
    with store.one_state():
        return _read(district_id, after, limit)


def _read(district_id: int, after: int, limit: int) -> list[dict]:
    found = {
        e["seq"]: e
        for e in Event.objects.filter(district_id=district_id, seq__gt=after)
        .order_by("seq")
        .values("seq", "sync_id", "entity", "sourced_id", "action")[:limit]
    }
    # Only events before the last row read can come before it in the page.
    end = max(found) if len(found) == limit else None
    ranges = CreatedRange.objects.filter(district_id=district_id, last_seq__gt=after)
    if end is not None:
        ranges = ranges.filter(first_seq__lte=end)
    wanted = limit
    for span in ranges.order_by("first_seq"):
        start = max(after + 1, span.first_seq)
        stop = min(span.last_seq, start + wanted - 1, end or span.last_seq)
        if wanted <= 0 or start > stop:
            break
        offset = span.first_id - span.first_seq
        records = (
            MODELS[span.entity]
            .objects.filter(district_id=district_id, id__gte=start + offset, id__lte=stop + offset)
            .order_by("id")
            .values_list("id", "sourced_id")
        )
        for row_id, key in records:
            found.setdefault(
                row_id - offset,
                {
                    "seq": row_id - offset,
                    "sync_id": span.sync_id,
                    "entity": span.entity,
                    "sourced_id": key,
                    "action": Event.Action.CREATED.value,
                },
            )
        wanted -= stop - start + 1
    return [found[seq] for seq in sorted(found)[:limit]]


def _prune(district_id: int) -> None:
    """Delete the events of syncs applied longer than the retention time ago."""
    cutoff = timezone.now() - timedelta(days=settings.FEED_RETENTION_DAYS)
    old = Batch.objects.filter(district_id=district_id, applied_at__lt=cutoff)
    last = old.aggregate(last=Max("last_seq"))["last"]
    if last is None:
        return
    Event.objects.filter(district_id=district_id, seq__lte=last).delete()
    CreatedRange.objects.filter(district_id=district_id, last_seq__lte=last).delete()
    old.delete()
    Counter.objects.filter(pk=district_id, pruned_through__lt=last).update(pruned_through=last)
