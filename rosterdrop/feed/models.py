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


class CreatedRange(models.Model):
    """A sync's created events of one entity's records kept as one row, not a row each: the
    records it first saw have consecutive row IDs, so event `first_seq + n` is the record with
    row ID `first_id + n`, its sourced ID read when the feed is read (events.read). A first
    import of 6.8M records writes a few of these instead of 6.8M events. An event row with the
    same number takes the place of the range's (events._keep_renamed)."""

    # Its index is the one below (district, last_seq): what a reader after a cursor looks up.
    district = models.ForeignKey(
        District, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    sync_id = models.BigIntegerField()
    entity = models.CharField(max_length=20)
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    first_id = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["district", "last_seq"], name="feed_range_last_seq")]


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


class Subscription(models.Model):
    """A vendor's webhook endpoint for one district: told of each applied sync's events."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=500)
    # whsec_<base64>: Standard Webhooks signs with it (HMAC-SHA256), so it is kept as is.
    secret = models.CharField(max_length=100)
    # Entities whose changes are announced (empty: all).
    entities = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of {self.district_id} to {self.url}"


class Delivery(models.Model):
    """One message to one subscription, in the outbox until its endpoint took it (2xx)."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    message_id = models.CharField(max_length=64, unique=True)  # webhook-id, the same on retries
    body = models.TextField()  # the exact bytes signed and sent
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # null: nothing more to try
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class Attempt(models.Model):
    """The delivery log: each try, its answer or error."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="log")
    at = models.DateTimeField(auto_now_add=True)
    status = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["id"]
