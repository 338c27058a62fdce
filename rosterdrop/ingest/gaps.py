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
candidate is looked up in the gap before apply and after (but where its place is known: a
user an enrollment of the upload names is in a class), the count moves by the difference,
and the first IDs are made again from the candidates, the IDs kept, and, where IDs left, the
next ones in order (`_shown`). Anything else (no earlier count, a large share changed, orgs
changed) is counted in full.
"""

from collections.abc import Collection, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Value,
)
from django.db.models.expressions import RawSQL

from rosterdrop.districts.models import District
from rosterdrop.ingest import apply
from rosterdrop.ingest.columns import KEY, ROW, STATUS
from rosterdrop.ingest.keys import EntityRows
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
# it, the roles of them it counts (None: any), and whether an active one keeps the record out
# of the gap (an enrollment: the student is in a class) or not necessarily (a role: the user
# is a student, or has a role at some org). A record of these whose fields in `READ` did not
# change moves nothing.
NAMED_BY: dict[str, tuple[tuple[str, str, tuple[str, ...] | None, bool], ...]] = {
    "students_without_classes": (
        ("roles", "userSourcedId", ("student",), False),
        ("enrollments", "userSourcedId", None, True),
    ),
    "classes_without_teacher": (("enrollments", "classSourcedId", ("teacher",), True),),
    "classes_without_students": (("enrollments", "classSourcedId", ("student",), True),),
    "users_in_no_school": (
        ("roles", "userSourcedId", None, False),
        ("agents", "agentSourcedId", None, True),
    ),
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
# gaps read, and a gap's look-ups (candidates before and after) are at most this share of
# its entity's records: a full count looks up each of them once.
CHANGED_SHARE = 0.1
LOOKUP_SHARE = 0.5
# Every ID of a gap of at most this many records is kept (RosterGaps.known): the next sync
# then looks up none of its candidates before apply (~40 bytes an ID in the row).
KNOWN = 10_000
# A version of a record: as it was before the sync (active then) or as it will be after.
NEW = "_new"
# The entities whose records the gaps probe by reference, one per record (`_named`).
_PROBED = ("roles", "agents", "enrollments")
# The entities the gaps read.
_READ = {*KINDS.values(), *_PROBED, "orgs"}


def _active(district_id: int, entity: str) -> Records:
    found: Records = records(district_id, entity)
    return found.filter(status="active")


def _ids(district_id: int, entity: str, field: str, **where: str) -> Records:
    """The non-null values of `field` of the active records matching `where`: a subquery
    (a NULL in `NOT IN` would exclude every row)."""
    found = _active(district_id, entity).filter(**where).exclude(**{f"{field}__isnull": True})
    return found.values(field)


def _named(district_id: int, entity: str, field: str, *where: Q) -> Q:
    """Whether an active record of `entity` matching `where` names the outer record in
    `field`: one probe of the roster's index on it per record (roster.models.LOOKUPS), where
    `NOT IN` a subquery would have SQLite sort every enrollment first (measured: 14 s of CPU at
    5M). While that index is not built on SQLite (a first import's, until the build after its
    sync), a probe would scan every record of `entity`: then `IN` it is, sorted once, without
    its NULLs (one NULL in `NOT IN` would exclude every record). PostgreSQL plans EXISTS as a
    hash join without the index, and `NOT IN` a subquery bigger than its work_mem as a scan of
    the subquery's rows per record (store.probes_by_reference)."""
    named = _active(district_id, entity).filter(*where)
    if not store.probes_by_reference(entity):
        return Q(sourced_id__in=named.exclude(**{f"{field}__isnull": True}).values(field))
    return Q(Exists(named.filter(**{field: OuterRef("sourced_id")})))


def queries(district_id: int) -> dict[str, Records]:
    """Each gap's records, as queries the database answers from its indexes."""
    schools = _ids(district_id, "orgs", "sourced_id", type="school")
    # Parents and guardians belong to their children, not to a school.
    parent_roles = Q.create([("role__iexact", r) for r in PARENT_ROLES], Q.OR)
    # Probed like the others, and each on its own (`NOT A AND NOT B`, not `NOT (A OR B)`,
    # which PostgreSQL cannot turn into anti joins): `NOT IN` the roles' users was a scan of
    # every role per user on PostgreSQL as soon as the orgs had statistics (pgcopy22: over
    # 8 minutes at `huge`).
    unplaced = (
        ~_named(district_id, "roles", "userSourcedId", Q(orgSourcedId__in=schools))
        & ~_named(district_id, "agents", "agentSourcedId")
        & ~_named(district_id, "roles", "userSourcedId", parent_roles)
    )
    users = _active(district_id, "users")
    classes = _active(district_id, "classes")
    enrolled = _named(district_id, "enrollments", "userSourcedId")
    student = _named(district_id, "roles", "userSourcedId", Q(role="student"))
    return {
        "students_without_classes": users.filter(student & ~enrolled),
        "classes_without_teacher": classes.exclude(
            _named(district_id, "enrollments", "classSourcedId", Q(role="teacher"))
        ),
        "classes_without_students": classes.exclude(
            _named(district_id, "enrollments", "classSourcedId", Q(role="student"))
        ),
        "users_in_no_school": users.filter(unplaced),
    }


@dataclass
class Before:
    """The gaps a sync counts from what it changes, as they stood before it applied: the
    kept count; per gap, its candidates in the gap before apply, and those to look up after
    it. A candidate not looked up is known to be out of the gap then: a removed class after,
    a new one before, a student before the sync removes one of her enrollments.

    Its updated records are taken to name what they named (a later date, a new name): the
    count after apply checks that against the fields apply's updates changed
    (`_moved_by_updates`)."""

    kept: RosterGaps
    found: dict[str, set[str]] = field(default_factory=dict)
    after: dict[str, pl.Series] = field(default_factory=dict)
    # The entities whose removed records' fields are read as apply marks them (`_kept_out`:
    # the statement marking them returns them, `named`), not sought before apply.
    removed: frozenset[str] = frozenset()
    # Per gap, IDs known to be out of it after apply, not looked up then: those the upload's
    # records keep out (`upload_keeps_out`), and the candidates known out (`_candidates`).
    out: dict[str, pl.Series] = field(default_factory=dict)


def named(counted: Before | None) -> dict[str, tuple[str, ...]]:
    """What apply is to return of the records it marks removed, per entity, for `count`:
    the fields the gaps read of them (none if the gaps are counted in full)."""
    return {e: READ[e] for e in counted.removed} if counted else {}


def _in(table: str) -> Q:
    """Records whose ID is listed in `table` (store.listed)."""
    return Q(sourced_id__in=RawSQL(f"SELECT _key FROM {table}", ()))


def _kept_out(entity: str) -> bool:
    """Whether every gap that `entity` names records of counts an active one as keeping the
    record out: its removed records then need looking up only after apply, which reads what
    they named from the records themselves (`_removed`)."""
    named = [out for deps in NAMED_BY.values() for e, _, _, out in deps if e == entity]
    return bool(named) and all(named)


def upload_keeps_out(
    entities: Mapping[str, EntityRows], accepted: Mapping[str, pl.DataFrame]
) -> dict[str, pl.Series]:
    """Per gap, the IDs that the upload's accepted active records keep out of it whatever
    their role (`NAMED_BY`: a user an enrollment names is in a class), read from the
    references the key checks held, before they let them go.

    Each such record is active once the sync applies, naming what its row names (a reference
    is the field as written, keys.EntityRows), so these need no look-up after apply: at `huge`
    the 1% change's ~48k students of removed classes, each a probe of the enrollments by user
    and a read of a random page of them to find one still active."""
    found: dict[str, pl.Series] = {}
    for kind, names in NAMED_BY.items():
        parts = [pl.Series(KEY, [], pl.String)]
        for entity, by, roles, keeps_out in names:
            rows = entities.get(entity)
            if not keeps_out or roles is not None or rows is None or entity not in accepted:
                continue
            frame = rows.frame()
            if by not in frame.columns:
                continue
            active = np.zeros(rows.rows, dtype=bool)
            active[accepted[entity].filter(pl.col(STATUS) == "active")[ROW].to_numpy()] = True
            named = frame[by].filter(pl.Series(active[frame[ROW].to_numpy()]))
            values = named.unique().cast(pl.String)
            # A missing reference is "" (mapping.py), which names nothing.
            parts.append(values.filter(values != "").alias(KEY))
        found[kind] = pl.concat(parts).unique()
    return found


@timed("gaps before")
def before(
    conn: Cursor,
    district_id: int,
    token: int,
    plan: Plan,
    spills: dict[str, Spill],
    kept_out: Mapping[str, pl.Series],
) -> Before | None:
    """Inside the applying transaction, before apply: the gaps this sync can count from what
    it changes on the roster of `token`, looked up as they stand; None to count all in full.
    `kept_out`: per gap, the IDs its accepted records keep out of it after apply
    (`upload_keeps_out`)."""
    kept = RosterGaps.objects.filter(district_id=district_id, token=token).first()
    entities = {e: ep for e, ep in plan.entities.items() if e in {*READ, *KINDS.values()}}
    touched = sum(_touched(ep) for ep in entities.values())
    if kept is None or touched > CHANGED_SHARE * sum(ep.active_before for ep in entities.values()):
        return None
    moved = {e: _moved(conn, district_id, ep, spills[e]) for e, ep in entities.items()}
    found = queries(district_id)
    counting = Before(kept, removed=frozenset(e for e in entities if _kept_out(e)))
    for n, (kind, entity) in enumerate(KINDS.items()):
        now, then, out = _candidates(kind, entity, moved)
        # Any org added, removed, reactivated or renamed (its updates: after apply).
        whole = any(
            kind in WHOLE.get(e, ()) and (v.height or entities[e].renamed.height)
            for e, v in moved.items()
        )
        held = entities[entity].active_before if entity in entities else None
        if held is None:
            held = _active(district_id, entity).count()
        lookups = len(then) + (0 if kind in kept.known else len(now))
        if whole or not _kept(kept, kind) or lookups > LOOKUP_SHARE * held:
            continue
        if kind in kept.known:
            counting.found[kind] = set(now) & set(kept.known[kind])
        else:
            listed = store.listed(conn, f"rd_gap_{n}", now)
            counting.found[kind] = set(
                found[kind].filter(_in(listed)).values_list("sourced_id", flat=True)
            )
        counting.after[kind] = then
        counting.out[kind] = pl.concat([out, kept_out.get(kind, out.clear())])
    return counting


def _kept(kept: RosterGaps, kind: str) -> bool:
    """Whether the gap was kept with its first IDs (a count of an older version may lack a
    gap)."""
    return kind in kept.counts and bool(kept.shown.get(kind)) == bool(kept.counts[kind])


def _touched(ep: EntityPlan) -> int:
    return sum(n for what, n in ep.counts.items() if what != "unchanged")


def _moved(conn: Cursor, district_id: int, ep: EntityPlan, spill: Spill) -> pl.DataFrame:
    """The versions of the entity's records the sync adds, removes or reactivates, each old
    (NEW false: active before the sync) or new (active after it): of a record the gaps read
    through `READ`, KEY and those fields (its removed records' only where they are needed
    before apply: `_kept_out`); of a record of a gap's own entity, its KEY as it was and as
    it will be (renamed ones too; an update of other fields moves nothing)."""
    fields = READ.get(ep.entity, ())
    new = apply.written(ep, spill, fields).filter(pl.col("_action") != apply.UPDATED)
    if not fields:
        olds = pl.concat([ep.removed.alias(KEY), ep.renamed["_old_key"].alias(KEY)])
        news = pl.concat([new[KEY], ep.renamed[KEY]])
        return pl.concat(
            [
                olds.to_frame().with_columns(pl.lit(False).alias(NEW)),
                news.to_frame().with_columns(pl.lit(True).alias(NEW)),
            ]
        )
    versions = [new.select(KEY, *fields).with_columns(pl.lit(True).alias(NEW))]
    if len(ep.removed) and not _kept_out(ep.entity):
        removed = ep.removed.alias(KEY).to_frame()
        old = store.fields_of(conn, district_id, ep.entity, removed, fields)
        versions.append(old.with_columns(pl.lit(False).alias(NEW)))
    return pl.concat(versions)


def _candidates(
    kind: str, entity: str, moved: dict[str, pl.DataFrame]
) -> tuple[pl.Series, pl.Series, pl.Series]:
    """The IDs of `entity` whose place in the gap the moved versions may change, to look up
    before the sync and after it: each but those known to be out of the gap then (a record
    of the entity while it was or will not be active; one an active record keeps out); and
    those known to be out after it (what a removed record named may be one of them)."""
    out = [pl.col(NEW).not_().alias("_out_after"), pl.col(NEW).alias("_out_before")]
    named = [moved[entity].select(KEY, *out)] if entity in moved else []
    for named_by, by, roles, keeps_out in NAMED_BY[kind]:
        if named_by not in moved:
            continue
        versions = moved[named_by]
        if roles is not None:
            versions = versions.filter(pl.col("role").is_in(roles))
        named.append(
            versions.filter(pl.col(by).is_not_null()).select(
                pl.col(by).alias(KEY),
                (pl.col(NEW) & keeps_out).alias("_out_after"),
                (pl.col(NEW).not_() & keeps_out).alias("_out_before"),
            )
        )
    if not named:
        empty = pl.Series(KEY, [], pl.String)
        return empty, empty, empty
    known = (
        pl.concat(named).group_by(KEY).agg(pl.col("_out_before").any(), pl.col("_out_after").any())
    )
    after = pl.col("_out_after")
    return (
        known.filter(~pl.col("_out_before"))[KEY],
        known.filter(~after)[KEY],
        known.filter(after)[KEY],
    )


def applied(
    district_id: int,
    sync_id: int,
    token: int,
    counted: Before | None,
    done: apply.Applied,
    stale: Collection[str] = (),
) -> None:
    """Count the gaps of the roster a sync applies, in its transaction (`count`), unless it
    left the reference indexes the count probes to be built after it (a first import,
    roster.store.lookups_built_after): they are then counted after those (`after_sync`), and
    until then the district keeps no count and `of` counts when asked. `done`: what apply
    told (the records it marked removed, the fields its updates changed); `stale`: the
    entities whose statistics the sync's writes left behind (store.stale_statistics)."""
    if all(store.lookups_built(e) for e in _PROBED):
        count(district_id, sync_id, token, counted, done, stale)
    else:
        RosterGaps.objects.filter(district_id=district_id).delete()


def after_sync(district_id: int, sync_id: int, token: int | None) -> None:
    """After the build of what a sync left to after it: count the gaps of the roster it left
    (the roster of `token`), if it is still the district's and nobody counted them since."""
    with transaction.atomic():
        if token is None or token != store.roster_token(district_id):
            return
        if not RosterGaps.objects.filter(district_id=district_id, token=token).exists():
            count(district_id, sync_id, token)


@timed("count gaps")
def count(
    district_id: int,
    sync_id: int | None,
    token: int,
    counted: Before | None = None,
    done: apply.Applied | None = None,
    stale: Collection[str] = (),
) -> RosterGaps:
    """Count the district's gaps as its roster stands (inside the applying transaction: as
    it will stand once that commits, the roster of `token`) and keep them, replacing the
    earlier count: from `counted` for the gaps it counted before apply (unless the sync's
    updates moved what they name), in full otherwise, as joins of whole tables where the
    statistics of what a gap reads are `stale` (store.whole_joins). `done`: what apply
    told of the sync (the records it marked removed, `named`; the fields it updated)."""
    counts: dict[str, int] = {}
    shown: dict[str, list[str]] = {}
    known: dict[str, list[str]] = {}
    # What the sync's updates moved, and what its removed records named, as apply told.
    moved, removed = set(), None
    if counted is not None and done is not None:
        moved, removed = _moved_by_updates(done.updated), _Removed(done.marked)
    joined = store.whole_joins if _READ & set(stale) else nullcontext
    for n, (kind, found) in enumerate(queries(district_id).items()):
        if counted and removed and kind in counted.after and not _named_by(kind) & moved:
            then = pl.concat([counted.after[kind], removed.named(kind)]).unique()
            counts[kind], shown[kind], every = _from_changes(found, counted, kind, then, n)
        else:
            with joined():
                ids = _every(found)
            counts[kind], shown[kind], every = len(ids), ids[:SHOWN], set(ids)
        if every is not None and len(every) <= KNOWN:
            known[kind] = sorted(every)
    gaps, _ = RosterGaps.objects.update_or_create(
        district_id=district_id,
        defaults={
            "sync_id": sync_id,
            "token": token,
            "counts": counts,
            "shown": shown,
            "known": known,
        },
    )
    return gaps


def _moved_by_updates(updated: dict[str, set[str]]) -> set[str]:
    """The entities whose records the sync updated in a field the gaps read (`READ`), from
    the fields apply's updates changed: not looked for in its change rows' JSON text once
    written (at `huge` 50k updated enrollments, ~0.5 s of the server's under load)."""
    return {entity for entity, fields in READ.items() if updated.get(entity, set()) & set(fields)}


def _named_by(kind: str) -> set[str]:
    """The entities whose records can move a record in or out of the gap."""
    return {e for e, _, _, _ in NAMED_BY[kind]} | {e for e, gaps in WHOLE.items() if kind in gaps}


class _Removed:
    """What the records the sync removed named, as apply read them while marking them (they
    keep their fields): those of the entities whose removed records are looked up only after."""

    def __init__(self, marked: dict[str, pl.DataFrame]):
        self.marked = marked

    def named(self, kind: str) -> pl.Series:
        parts = [pl.Series(KEY, [], pl.String)]
        for entity, by, roles, _ in NAMED_BY[kind]:
            if not _kept_out(entity):
                continue
            versions = self.marked.get(entity)
            if versions is None:  # not sent: none marked
                continue
            if roles is not None:
                versions = versions.filter(pl.col("role").is_in(roles))
            parts.append(versions[by].drop_nulls().alias(KEY))
        return pl.concat(parts)


def _every(found: Records) -> list[str]:
    """Every ID of a gap, over the whole district, in order."""
    return list(found.order_by("sourced_id").values_list("sourced_id", flat=True))


def in_full(found: Records) -> tuple[int, list[str]]:
    """A gap's count and first IDs, over the whole district."""
    ids = _every(found)
    return len(ids), ids[:SHOWN]


def _from_changes(
    found: Records, counted: Before, kind: str, then: pl.Series, n: int
) -> tuple[int, list[str], set[str] | None]:
    """A gap's count and first IDs now, from the count and first IDs kept before the sync
    (`kept`) and its candidates to look up now (`then`).

    Only a candidate can have entered or left, so the count moves by those now in it less
    those in it before; and up to the last ID kept, the gap now is the kept IDs still in it
    and the candidates now in it (all looked up in one query, ordered by the database as a
    full count orders them: its collation, not Python's); past that ID, should fewer than
    SHOWN be left and the kept IDs not have been the whole gap, come the next ones in order.
    Every ID too, if they were kept: those kept but the candidates, and the candidates now in
    it (a candidate not looked up now is out of it)."""
    kept, before = counted.kept.shown[kind], counted.kept.counts[kind]
    # The kept IDs listed with the candidates: one list to seek (an OR of two would have the
    # database test every record of the entity); not the candidates known to be out.
    sought = then.filter(~then.is_in(counted.out[kind].implode()))
    with connection.cursor() as cursor:
        shown = pl.Series(KEY, kept, pl.String)
        table = store.listed(cursor.cursor, f"rd_gap_after_{n}", pl.concat([sought, shown]))
    listed = set(then)
    whole = before == len(kept)
    first = Value(True) if whole else ExpressionWrapper(Q(sourced_id__lte=kept[-1]), BooleanField())
    near = found.filter(_in(table)).annotate(_first=first)
    rows = list(near.order_by("sourced_id").values_list("sourced_id", "_first"))
    now = {i for i, _ in rows if i in listed}
    ids = [i for i, is_first in rows if is_first][:SHOWN]
    if len(ids) < SHOWN and not whole:
        past = found.filter(sourced_id__gt=kept[-1]).order_by("sourced_id")
        ids.extend(past.values_list("sourced_id", flat=True)[: SHOWN - len(ids)])
    every = None
    if kind in counted.kept.known:
        every = (set(counted.kept.known[kind]) - counted.found[kind] - listed) | now
    return before - len(counted.found[kind]) + len(now), ids, every


def of(district: District) -> RosterGaps:
    """The district's gaps as last counted; counted now if no sync has counted them (a
    roster applied before they were kept)."""
    gaps = RosterGaps.objects.filter(district=district).first()
    if gaps is not None:
        return gaps
    # The token read before the count: a sync committing meanwhile leaves the count kept under
    # an older token, which the next sync does not count from.
    return count(district.pk, None, store.roster_token(district.pk))
