"""The change feed: what each applied sync did to each record, numbered without gaps per
district, written in the transaction that changed the roster."""

from django.db import models

from rosterdrop.districts.models import District


class Counter(models.Model):
    """A district's last event number; its row is locked while a sync writes events, so
    numbers are given out in commit order, none skipped."""

    district = models.OneToOneField(
        District, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    last_seq = models.BigIntegerField(default=0)
    # Events up to this number were deleted (retention): a cursor before it has lost events.
    pruned_through = models.BigIntegerField(default=0)


class Event(models.Model):
    class Action(models.TextChoices):
        CREATED = "created"
        UPDATED = "updated"
        DELETED = "deleted"

    # Keyed by (district, seq) and nothing else: one index to maintain on millions of inserts
    # (measured on PostgreSQL: an ID column and its index on top cost about as much again).
    pk = models.CompositePrimaryKey("district", "seq")
    # No constraint, as for roster records: written in bulk, deleted with their district.
    district = models.ForeignKey(
        District, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    seq = models.BigIntegerField()
    sync_id = models.BigIntegerField()  # a plain ingest.Sync ID: the feed is downstream
    entity = models.CharField(max_length=20)
    sourced_id = models.CharField(max_length=255)
    action = models.CharField(max_length=8, choices=Action.choices)


class Batch(models.Model):
    """The events one sync wrote: what a webhook announces, and what retention deletes."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="+")
    sync_id = models.BigIntegerField(unique=True)
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    applied_at = models.DateTimeField()
    counts = models.JSONField(default=dict, help_text="{action: events}")

    class Meta:
        ordering = ["first_seq"]
