"""The canonical roster: one OneRoster 1.2 shaped table per entity, per district a row per
source ID.

Each entity's canonical fields (schema.FIELDS) are text columns of its own table, named as
OneRoster names them; extra source columns are kept in `metadata` (JSON, null when the format
keeps none). `content_hash` is a hash of the fields and metadata together, so that a re-import
can skip unchanged records without reading them. Typed columns, not one JSON document per
record: a record costs about what its CSV row costs, which is what the bulk imports write.
"""

import secrets
from typing import Any, ClassVar

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

from rosterdrop.districts.models import District
from rosterdrop.roster.schema import FIELDS, REFS

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


def new_roster_token() -> int:
    return secrets.randbits(62) + 1


class RosterToken(models.Model):
    """The version of a district's roster, one row per district: a new random value with every
    sync that changes the roster (store.claim_roster). It names the saved content-hash
    snapshot and stops two imports applying plans made against the same roster. The roster
    app's own table, so that saving a district read earlier can never write back a stale one."""

    district = models.OneToOneField(
        District, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    token = models.BigIntegerField(default=new_roster_token)

    def __str__(self) -> str:
        return f"{self.district_id}-t{self.token}"


class PipelineJSONField(models.JSONField):
    """JSON that only the pipeline's own encoder writes: SQLite need not re-parse each row
    to check it (Django's JSON_VALID constraint), which costs much on bulk inserts."""

    def db_check(self, connection: BaseDatabaseWrapper) -> None:
        return None


class RowIdField(models.BigAutoField):  # type: ignore[type-arg]  # not subscriptable at run time
    """An auto ID without SQLite's AUTOINCREMENT, which updates a bookkeeping table on every
    insert (measured: about 10% of a bulk insert). Records are only ever deleted with their
    district, so the one difference, reuse of the highest IDs after a delete, does not bite."""

    def db_type_suffix(self, connection: BaseDatabaseWrapper) -> str | None:
        if connection.vendor == "sqlite":
            return None
        return super().db_type_suffix(connection)


# PostgreSQL's collation of source IDs: byte by byte (ByteOrdered).
BYTE_ORDER = "C"


class ByteOrdered(models.Field):  # type: ignore[type-arg]  # not subscriptable at run time
    """A column of source IDs compared byte by byte on PostgreSQL (collation "C"), as SQLite
    compares every text. In the database's own collation each comparison goes through the C
    library's strcoll: the unique key of a first import's 5M enrollments, a sort of their IDs,
    cost 5.9 s of the server's CPU against 4.1 s (bench/README.md, pgfirst26), and the lookups
    by reference after it the same. A key and the references to it share the collation, so
    that a join of one on the other can use either's index, and so do the temporary lists of
    keys a sync seeks records by (store._keyed_table): a comparison of two collations takes
    this one, and a list's index in another could not answer it."""

    def db_parameters(self, connection: BaseDatabaseWrapper) -> dict[str, Any]:
        params = super().db_parameters(connection)
        if connection.vendor == "postgresql":
            params["collation"] = BYTE_ORDER
        return params


class KeyField(ByteOrdered, models.CharField):  # type: ignore[type-arg]
    """A record's source ID."""


class RefField(ByteOrdered, models.TextField):  # type: ignore[type-arg]
    """A field naming records of another entity (schema.REFS)."""


class Status(models.TextChoices):
    ACTIVE = "active"
    TOBEDELETED = "tobedeleted"


class RosterRecord(models.Model):
    """What every roster record has, whatever its entity."""

    entity: ClassVar[str]
    Status = Status

    id = RowIdField(primary_key=True)
    # No index of its own: the unique (district, sourced_id) index serves district lookups,
    # and every index costs on each of millions of inserts. No constraint in the database
    # either: PostgreSQL checks a deferred foreign key row by row at commit (measured: 1M
    # records COPY'd in 13-15 s, then 6-9 s more for the check). Only the pipeline writes
    # records, in the transaction that claims the district's roster token, and Django
    # deletes them with their district.
    district = models.ForeignKey(
        District, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    sourced_id = KeyField(max_length=255)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    content_hash = models.BigIntegerField()
    # Plain IDs of ingest.Sync rows: the roster is downstream of ingest and does not refer back.
    # When is the sync's (ingest.models.with_sync_times): no timestamps on millions of rows.
    first_seen_sync_id = models.BigIntegerField()
    changed_sync_id = models.BigIntegerField()
    metadata = PipelineJSONField(null=True, blank=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.entity}/{self.sourced_id}"

    @property
    def data(self) -> dict[str, Any]:
        """The record's canonical fields in schema order, and its extra columns under
        "metadata" when its format keeps them: what the API and the pages show."""
        data = {name: getattr(self, name) for name in FIELDS[self.entity]}
        if self.metadata is not None:
            data["metadata"] = self.metadata
        return data


MODELS: dict[str, type[RosterRecord]] = {}


# References looked up by the ID they name, each with the district and what the lookup also
# reads: the data assistant's gaps, counted as a sync applies (ingest.gaps: "a student with no
# enrollment", "a class with no teacher enrollment"), and "why is X"'s count of what refers to
# X. Without them each was a scan of every enrollment: seconds at 5M. Each costs its share of
# every write of the entity. No column a sync changes on a kept record (status,
# changed_sync_id) is in any index of a roster table: PostgreSQL then updates a record in
# place on its own page (a HOT update) instead of writing a new row version elsewhere and an
# entry in every index (measured, 10k of 500k enrollments marked removed: 1.6-3.0 s -> 0.21 s);
# a lookup that wants active records only reads the status of the rows it found.
LOOKUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "roles": (("userSourcedId", "role"),),
    "agents": (("userSourcedId",), ("agentSourcedId",)),
    "enrollments": (("userSourcedId",), ("classSourcedId", "role")),
}


# Each entity's LOOKUPS as the indexes its model declares (store.lookups_built_after drops and
# builds them by these).
LOOKUP_INDEXES: dict[str, list[models.Index]] = {}

# Each entity's index of a district's records in row order (`_in_order`), by name: a read of
# every record of a district on SQLite names it (INDEXED BY), since SQLite, with no
# statistics, would otherwise pick a lookup index and read the rows in random order.
IN_ORDER: dict[str, str] = {}


def _roster_table(entity: str, name: str) -> type[RosterRecord]:
    """The model of one entity: the common columns and its canonical fields, all text."""
    LOOKUP_INDEXES[entity] = [
        models.Index(fields=["district", *fields], name=f"{name.lower()}_{fields[0]}")
        for fields in LOOKUPS.get(entity, ())
    ]
    IN_ORDER[entity] = f"{name.lower()}_in_order"
    meta = type(
        "Meta",
        (),
        {
            "constraints": [
                models.UniqueConstraint(
                    fields=["district", "sourced_id"], name=f"{name.lower()}_unique_source_id"
                )
            ],
            # What reading the roster walks (oneroster): a district's records in row order
            # (pages, counts), and those a sync added, in row order (the feed's created
            # events). Both fill at their end as a sync writes (new records take the highest
            # row IDs) and neither changes after: no update leaves a record's page (LOOKUPS).
            # Then the lookups by reference of the console's pages.
            "indexes": [
                models.Index(fields=["district", "id"], name=IN_ORDER[entity]),
                models.Index(
                    fields=["district", "first_seen_sync_id", "id"],
                    name=f"{name.lower()}_first_seen",
                ),
                *LOOKUP_INDEXES[entity],
            ],
        },
    )
    refs = {ref.field for ref in REFS[entity]}
    fields = {
        field: (RefField if field in refs else models.TextField)(null=True, blank=True)
        for field in FIELDS[entity]
    }
    attrs = {"__module__": __name__, "entity": entity, "Meta": meta, **fields}
    model = type(name, (RosterRecord,), attrs)
    MODELS[entity] = model
    return model


Org = _roster_table("orgs", "Org")
AcademicSession = _roster_table("academicSessions", "AcademicSession")
Course = _roster_table("courses", "Course")
Class = _roster_table("classes", "Class")
User = _roster_table("users", "User")
Role = _roster_table("roles", "Role")
Demographics = _roster_table("demographics", "Demographics")
Agent = _roster_table("agents", "Agent")
Enrollment = _roster_table("enrollments", "Enrollment")


def records(district: District | int, entity: str) -> models.QuerySet[RosterRecord]:
    """The district's records of one entity."""
    return MODELS[entity]._default_manager.filter(district=district)
