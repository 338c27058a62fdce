"""The roster's gaps, counted in the transaction that applies a sync: students in no class,
sections without a teacher, classes without students, users in no school.

The data assistant shows them. Counted per request they cost seconds at 5M enrollments (every
enrollment read into Python); the roster changes only when a sync applies, so they are
counted then, in the database, and kept with the first IDs of each (`RosterGaps`).
"""

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from rosterdrop.districts.models import District
from rosterdrop.ingest.models import RosterGaps
from rosterdrop.roster.models import records
from rosterdrop.timing import timed

# A query of one entity's records or of their values: typed Any, since the fields filtered on
# (userSourcedId, orgSourcedId...) belong to each entity's model, not to the RosterRecord base.
Records = QuerySet[Any, Any]

# IDs kept of each gap: what the assistant lists.
SHOWN = 200
PARENT_ROLES = ("parent", "guardian", "relative")
# Each gap, and the entity of its records.
KINDS = {
    "students_without_classes": "users",
    "classes_without_teacher": "classes",
    "classes_without_students": "classes",
    "users_in_no_school": "users",
}


def _active(district_id: int, entity: str) -> Records:
    found: Records = records(district_id, entity)
    return found.filter(status="active")


def _ids(district_id: int, entity: str, field: str, **where: str) -> Records:
    """The non-null values of `field` of the active records matching `where`: a subquery
    (a NULL in `NOT IN` would exclude every row)."""
    found = _active(district_id, entity).filter(**where).exclude(**{f"{field}__isnull": True})
    return found.values(field)


def _named(district_id: int, entity: str, field: str, **where: str) -> Exists:
    """Whether an active record of `entity` names the outer record in `field`: one probe of
    the roster's index on it per record (roster.models.LOOKUPS), where `NOT IN` a subquery
    would have SQLite sort every enrollment first (measured: 14 s of CPU at 5M)."""
    named = _active(district_id, entity).filter(**{field: OuterRef("sourced_id")}, **where)
    return Exists(named)


def _gaps(district_id: int) -> dict[str, Records]:
    """Each gap's records, as queries the database answers from its indexes."""
    roles = _active(district_id, "roles")
    schools = _ids(district_id, "orgs", "sourced_id", type="school")
    # Parents and guardians belong to their children, not to a school.
    parent_roles = Q.create([("role__iexact", r) for r in PARENT_ROLES], Q.OR)
    placed = (
        Q(sourced_id__in=roles.filter(orgSourcedId__in=schools).values("userSourcedId"))
        | Q(sourced_id__in=_ids(district_id, "agents", "agentSourcedId"))
        | Q(sourced_id__in=roles.filter(parent_roles).values("userSourcedId"))
    )
    users = _active(district_id, "users")
    classes = _active(district_id, "classes")
    enrolled = _named(district_id, "enrollments", "userSourcedId")
    student = _named(district_id, "roles", "userSourcedId", role="student")
    return {
        "students_without_classes": users.filter(student & ~enrolled),
        "classes_without_teacher": classes.exclude(
            _named(district_id, "enrollments", "classSourcedId", role="teacher")
        ),
        "classes_without_students": classes.exclude(
            _named(district_id, "enrollments", "classSourcedId", role="student")
        ),
        "users_in_no_school": users.exclude(placed),
    }


@timed("count gaps")
def count(district_id: int, sync_id: int | None) -> RosterGaps:
    """Count the district's gaps as its roster stands (inside the applying transaction: as
    it will stand once that commits) and keep them, replacing the earlier count."""
    counts: dict[str, int] = {}
    shown: dict[str, list[str]] = {}
    for kind, found in _gaps(district_id).items():
        ids = list(found.order_by("sourced_id").values_list("sourced_id", flat=True))
        counts[kind], shown[kind] = len(ids), ids[:SHOWN]
    gaps, _ = RosterGaps.objects.update_or_create(
        district_id=district_id, defaults={"sync_id": sync_id, "counts": counts, "shown": shown}
    )
    return gaps


def of(district: District) -> RosterGaps:
    """The district's gaps as last counted; counted now if no sync has counted them (a
    roster applied before they were kept)."""
    gaps = RosterGaps.objects.filter(district=district).first()
    return gaps if gaps is not None else count(district.pk, None)
