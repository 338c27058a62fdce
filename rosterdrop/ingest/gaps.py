"""The roster's gaps, counted in the transaction that applies a sync: students in no class,
sections without a teacher, classes without students, users in no school.

The data assistant shows them. Counted per request they cost seconds at 5M enrollments (every
enrollment read into Python); the roster changes only when a sync applies, so they are
counted then, in the database, and kept with the first IDs of each (`RosterGaps`).
"""

from django.db.models import Q, QuerySet

from rosterdrop.ingest.models import RosterGaps
from rosterdrop.roster.models import records

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


def _active(district_id: int, entity: str) -> QuerySet:
    return records(district_id, entity).filter(status="active")


def _ids(district_id: int, entity: str, field: str, **where) -> QuerySet:
    """The non-null values of `field` of the active records matching `where`: a subquery
    (a NULL in `NOT IN` would exclude every row)."""
    found = _active(district_id, entity).filter(**where).exclude(**{f"{field}__isnull": True})
    return found.values(field)


def _gaps(district_id: int) -> dict[str, QuerySet]:
    """Each gap's records, as queries the database answers with one pass per subquery."""
    enrollments = "enrollments"
    roles = _active(district_id, "roles")
    students = _ids(district_id, "roles", "userSourcedId", role="student")
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
    return {
        "students_without_classes": users.filter(sourced_id__in=students).exclude(
            sourced_id__in=_ids(district_id, enrollments, "userSourcedId")
        ),
        "classes_without_teacher": classes.exclude(
            sourced_id__in=_ids(district_id, enrollments, "classSourcedId", role="teacher")
        ),
        "classes_without_students": classes.exclude(
            sourced_id__in=_ids(district_id, enrollments, "classSourcedId", role="student")
        ),
        "users_in_no_school": users.exclude(placed),
    }


def count(district_id: int, sync_id: int | None) -> RosterGaps:
    """Count the district's gaps as its roster stands (inside the applying transaction: as
    it will stand once that commits) and keep them, replacing the earlier count."""
    counts, shown = {}, {}
    for kind, found in _gaps(district_id).items():
        ids = list(found.order_by("sourced_id").values_list("sourced_id", flat=True))
        counts[kind], shown[kind] = len(ids), ids[:SHOWN]
    gaps, _ = RosterGaps.objects.update_or_create(
        district_id=district_id, defaults={"sync_id": sync_id, "counts": counts, "shown": shown}
    )
    return gaps


def of(district) -> RosterGaps:
    """The district's gaps as last counted; counted now if no sync has counted them (a
    roster applied before they were kept)."""
    gaps = RosterGaps.objects.filter(district=district).first()
    return gaps if gaps is not None else count(district.pk, None)
