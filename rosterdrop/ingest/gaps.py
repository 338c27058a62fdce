"""The roster's gaps, counted in the transaction that applies a sync: students in no class,
sections without a teacher, classes without students, users in no school.

The data assistant shows them. Counted per request they cost seconds at 5M enrollments (every
enrollment read into Python); the roster changes only when a sync applies, so they are
counted then, in the database, and kept with the first IDs of each (`RosterGaps`).

Counted over the whole district they still cost seconds at 5M enrollments (a probe of an
index per user and class), where a nightly sync changes about 1% of the records. So when the
kept gaps describe the very roster a sync applies to (same roster token), each gap is counted
from what the sync changes: its candidates are the records it adds, removes, reactivates or
renames and those that the old and new versions of its changed records name (`before`); each
candidate is looked up in the gap before apply and after, the count moves by the difference,
and the first IDs are made again from the candidates, the IDs kept, and, where IDs left, the
next ones in order (`_shown`). Anything else (no earlier count, a large share changed, orgs
changed) is counted in full.
"""

from dataclasses import dataclass, field
from typing import Any

import polars as pl
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

from rosterdrop.districts.models import District
from rosterdrop.ingest import apply
from rosterdrop.ingest.columns import KEY
from rosterdrop.ingest.models import RosterGaps
from rosterdrop.ingest.plan import EntityPlan, Plan
from rosterdrop.ingest.spill import Spill
from rosterdrop.roster import store
from rosterdrop.roster.models import records
from rosterdrop.roster.store import Cursor
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

# What moves a record in or out of a gap besides the record itself (its status and ID), as
# `queries` reads the roster: the records of other entities that name it, by the field naming
# it and the roles of them it counts (None: any). A record of these whose fields in `READ`
# did not change moves nothing.
NAMED_BY: dict[str, tuple[tuple[str, str, tuple[str, ...] | None], ...]] = {
    "students_without_classes": (
        ("roles", "userSourcedId", ("student",)),
        ("enrollments", "userSourcedId", None),
    ),
    "classes_without_teacher": (("enrollments", "classSourcedId", ("teacher",)),),
    "classes_without_students": (("enrollments", "classSourcedId", ("student",)),),
    "users_in_no_school": (("roles", "userSourcedId", None), ("agents", "agentSourcedId", None)),
}
READ = {
    "roles": ("userSourcedId", "orgSourcedId", "role"),
    "enrollments": ("userSourcedId", "classSourcedId", "role"),
    "agents": ("agentSourcedId",),
    "orgs": ("type",),
}
# Gaps counted in full when a record of the entity changes what `READ` reads of it: which
# schools there are places or unplaces every user with a role there.
WHOLE = {"orgs": ("users_in_no_school",)}
# Counted from the changes only when the sync changes at most this share of the records the
# gaps read, and a gap has at most this share of its entity's records as candidates: each
# candidate is looked up twice, and found by reading the records that name it.
CHANGED_SHARE = 0.1
CANDIDATE_SHARE = 0.2


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


def queries(district_id: int) -> dict[str, Records]:
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


@dataclass
class Before:
    """The gaps a sync counts from what it changes, as they stood before it applied: the
    kept count, the candidates (in a temporary table each) and those of them in the gap."""

    kept: RosterGaps
    candidates: dict[str, str] = field(default_factory=dict)  # gap -> its table of IDs
    found: dict[str, set[str]] = field(default_factory=dict)


def _in(table: str) -> Q:
    """Records whose ID is listed in `table` (store.listed)."""
    return Q(sourced_id__in=RawSQL(f"SELECT _key FROM {table}", ()))


def _found_in(found: Records, table: str) -> set[str]:
    """The IDs listed in `table` that are in the gap `found`."""
    return set(found.filter(_in(table)).values_list("sourced_id", flat=True))


@timed("gaps before")
def before(
    conn: Cursor, district_id: int, token: int, plan: Plan, spills: dict[str, Spill]
) -> Before | None:
    """Inside the applying transaction, before apply: the gaps this sync can count from what
    it changes on the roster of `token`, looked up as they stand; None to count all in full."""
    kept = RosterGaps.objects.filter(district_id=district_id, token=token).first()
    entities = {e: ep for e, ep in plan.entities.items() if e in {*READ, *KINDS.values()}}
    touched = sum(_touched(ep) for ep in entities.values())
    if kept is None or touched > CHANGED_SHARE * sum(ep.active_before for ep in entities.values()):
        return None
    moved = {e: _moved(conn, district_id, ep, spills[e]) for e, ep in entities.items()}
    found = queries(district_id)
    counting = Before(kept)
    for n, (kind, entity) in enumerate(KINDS.items()):
        candidates = _candidates(kind, entity, moved)
        whole = any(kind in WHOLE.get(e, ()) and v.height for e, v in moved.items())
        held = entities[entity].active_before if entity in entities else None
        if held is None:
            held = _active(district_id, entity).count()
        if whole or kind not in kept.counts or len(candidates) > CANDIDATE_SHARE * held:
            continue
        table = store.listed(conn, f"rd_gap_{n}", candidates)
        counting.candidates[kind] = table
        counting.found[kind] = _found_in(found[kind], table)
    return counting


def _touched(ep: EntityPlan) -> int:
    return sum(n for what, n in ep.counts.items() if what != "unchanged")


def _moved(conn: Cursor, district_id: int, ep: EntityPlan, spill: Spill) -> pl.DataFrame:
    """The versions of the entity's records the sync changes that may move a record in or out
    of a gap: of a record the gaps read through `READ`, its old version (KEY, its fields) if
    it was active and its new one if it will be, where they differ in those fields; of a
    record of a gap's own entity, its key as it was and as it will be (added, removed,
    reactivated or renamed: an update of other fields moves nothing)."""
    fields = READ.get(ep.entity, ())
    new = apply.written(ep, spill, fields)
    renamed = dict(ep.renamed.select("_old_key", KEY).iter_rows())
    if not fields:
        own = new.filter(pl.col("_action") != apply.UPDATED)[KEY]
        keys = [own, ep.removed.alias(KEY), ep.renamed[KEY], ep.renamed["_old_key"].alias(KEY)]
        return pl.concat(keys).to_frame()
    updated = new.filter(pl.col("_action") == apply.UPDATED)
    # Old versions: removed records, and updated ones (renamed: under their old key).
    back = {new_key: old for old, new_key in renamed.items()}
    wanted = pl.concat(
        [ep.removed.alias(KEY), updated[KEY].replace(back) if back else updated[KEY]]
    ).unique()
    old = store.fields_of(conn, district_id, ep.entity, wanted.to_frame(), fields)
    # Paired with their new version by the key they will have.
    old = old.with_columns(pl.col(KEY).replace(renamed) if renamed else pl.col(KEY))
    pairs = old.join(updated.select(KEY, *fields), on=KEY, suffix="_new")
    same = pl.all_horizontal(pl.col(f).eq_missing(pl.col(f"{f}_new")) for f in fields)
    unmoved = pairs.filter(same)[KEY]
    return pl.concat(
        [
            old.filter(~pl.col(KEY).is_in(unmoved.implode())),
            new.filter(~pl.col(KEY).is_in(unmoved.implode())).select(KEY, *fields),
        ]
    )


def _candidates(kind: str, entity: str, moved: dict[str, pl.DataFrame]) -> pl.Series:
    """The IDs of `entity` whose place in the gap the moved versions may change."""
    parts = [moved[entity][KEY]] if entity in moved else []
    for named_by, by, roles in NAMED_BY[kind]:
        if named_by not in moved:
            continue
        versions = moved[named_by]
        if roles is not None:
            versions = versions.filter(pl.col("role").is_in(roles))
        parts.append(versions[by].drop_nulls().alias(KEY))
    return pl.concat(parts).unique() if parts else pl.Series(KEY, [], pl.String)


@timed("count gaps")
def count(
    district_id: int, sync_id: int | None, token: int, counted: Before | None = None
) -> RosterGaps:
    """Count the district's gaps as its roster stands (inside the applying transaction: as
    it will stand once that commits, the roster of `token`) and keep them, replacing the
    earlier count: from `counted` for the gaps it counted before apply, in full otherwise."""
    counts: dict[str, int] = {}
    shown: dict[str, list[str]] = {}
    for kind, found in queries(district_id).items():
        if counted is not None and kind in counted.candidates:
            table, kept = counted.candidates[kind], counted.kept
            now = _found_in(found, table)
            counts[kind] = kept.counts[kind] - len(counted.found[kind]) + len(now)
            shown[kind] = _shown(found, table, kept.shown[kind], kept.counts[kind])
            continue
        counts[kind], shown[kind] = in_full(found)
    gaps, _ = RosterGaps.objects.update_or_create(
        district_id=district_id,
        defaults={"sync_id": sync_id, "token": token, "counts": counts, "shown": shown},
    )
    return gaps


def in_full(found: Records) -> tuple[int, list[str]]:
    """A gap's count and first IDs, over the whole district."""
    ids = list(found.order_by("sourced_id").values_list("sourced_id", flat=True))
    return len(ids), ids[:SHOWN]


def _shown(found: Records, candidates: str, kept: list[str], counted: int) -> list[str]:
    """The first IDs of the gap now, from the first ones before (`kept`, of `counted`).

    Only a candidate can have entered or left, so up to the last ID kept the gap now is the
    kept IDs still in it and the candidates now in it; past it (if the kept IDs were not the
    whole gap) come the next ones in order, should fewer than SHOWN be left. Ordered by the
    database, as a full count orders them (its collation, not Python's)."""
    ordered = "sourced_id"
    near = found.filter(_in(candidates) | Q(sourced_id__in=kept))
    whole = counted == len(kept)
    if not whole:
        near = near.filter(sourced_id__lte=kept[-1])
    ids = list(near.order_by(ordered).values_list(ordered, flat=True)[:SHOWN])
    if len(ids) < SHOWN and not whole:
        after = found.filter(sourced_id__gt=kept[-1]).order_by(ordered)
        ids.extend(after.values_list(ordered, flat=True)[: SHOWN - len(ids)])
    return ids


def of(district: District) -> RosterGaps:
    """The district's gaps as last counted; counted now if no sync has counted them (a
    roster applied before they were kept)."""
    gaps = RosterGaps.objects.filter(district=district).first()
    if gaps is not None:
        return gaps
    # The token read before the count: a sync committing meanwhile leaves the count kept under
    # an older token, which the next sync does not count from.
    return count(district.pk, None, store.roster_token(district.pk))
