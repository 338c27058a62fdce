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


class Record(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        TOBEDELETED = "tobedeleted"

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="records")
    entity = models.CharField(max_length=20)
    sourced_id = models.CharField(max_length=255)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    data = models.JSONField()
    content_hash = models.BigIntegerField()
    # Plain IDs of ingest.Sync rows: the roster is downstream of ingest and does not refer back.
    first_seen_sync_id = models.BigIntegerField()
    changed_sync_id = models.BigIntegerField()
    first_seen_at = models.DateTimeField()
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["district", "entity", "sourced_id"], name="record_unique_source_id"
            )
        ]
        indexes = [
            models.Index(fields=["district", "entity", "status"], name="record_entity_status")
        ]

    def __str__(self) -> str:
        return f"{self.entity}/{self.sourced_id}"
