"""The canonical roster: one OneRoster 1.2 shaped record per entity and source ID, per district.

All entities share one table. The fields of a record live in `data` under their OneRoster 1.2
names, with extra source columns under `data["metadata"]`; `content_hash` is a hash of `data`
so that a re-import can skip unchanged records without reading them.
"""

from django.db import models

from rosterdrop.districts.models import District

# Canonical entities in the order in which they can reference each other.
ENTITIES = (
    "orgs",
    "academicSessions",
    "courses",
    "classes",
    "users",
    "roles",
    "demographics",
    "agents",
    "enrollments",
)


class PipelineJSONField(models.JSONField):
    """JSON that only the pipeline's own encoder writes: SQLite need not re-parse each row
    to check it (Django's JSON_VALID constraint), which costs much on bulk inserts."""

    def db_check(self, connection):
        return None


class RowIdField(models.BigAutoField):
    """An auto ID without SQLite's AUTOINCREMENT, which updates a bookkeeping table on every
    insert (measured: about 10% of a bulk insert). Records are only ever deleted with their
    district, so the one difference, reuse of the highest IDs after a delete, does not bite."""

    def db_type_suffix(self, connection):
        if connection.vendor == "sqlite":
            return None
        return super().db_type_suffix(connection)


class Record(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        TOBEDELETED = "tobedeleted"

    # No index of its own: the unique (district, entity, sourced_id) index serves district
    # lookups, and every index costs on each of millions of inserts. No constraint in the
    # database either: PostgreSQL checks a deferred foreign key row by row at commit
    # (measured: 1M records COPY'd in 13-15 s, then 6-9 s more for the check). Only the
    # pipeline writes records, in the transaction that claims the district's roster token,
    # and Django deletes them with their district.
    district = models.ForeignKey(
        District,
        on_delete=models.CASCADE,
        related_name="records",
        db_index=False,
        db_constraint=False,
    )
    entity = models.CharField(max_length=20)
    sourced_id = models.CharField(max_length=255)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    data = PipelineJSONField()
    content_hash = models.BigIntegerField()
    id = RowIdField(primary_key=True)
    # Plain IDs of ingest.Sync rows: the roster is downstream of ingest and does not refer back.
    # When is the sync's (ingest.models.with_sync_times): no timestamps on millions of rows.
    first_seen_sync_id = models.BigIntegerField()
    changed_sync_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["district", "entity", "sourced_id"], name="record_unique_source_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.entity}/{self.sourced_id}"
