"""Writing a sync's events in the transaction that applies it, and keeping them for the
retention time.

The events are copied by the database from what apply has just written (INSERT ... SELECT,
numbered with ROW_NUMBER): records first seen in the sync were created, its change rows say
what was updated, removed (deleted) or came back (created). No row passes through Python,
however many millions a first import writes.
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection, models
from django.db.models import Count, Max
from django.utils import timezone

from rosterdrop.feed import webhooks
from rosterdrop.feed.models import Batch, Counter, Event
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
    for entity in ENTITIES:
        cur.execute(
            f"{insert} SELECT district_id, {p} + ROW_NUMBER() OVER (ORDER BY id), "
            f"first_seen_sync_id, {p}, sourced_id, 'created' "
            f"FROM {MODELS[entity]._meta.db_table} "
            f"WHERE district_id = {p} AND first_seen_sync_id = {p}",
            [seq, entity, district_id, sync_id],
        )
        seq += max(cur.rowcount, 0)
        count(entity, "created", cur.rowcount)
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
