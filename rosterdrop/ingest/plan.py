"""Plan: the difference between the accepted records and the district's current roster.

Compared by source ID and content hash in memory (docs/reference/perf-floors.md: an in-process
hash join is an order of magnitude faster than diffing in SQL). Also the removal guard.
"""

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from rosterdrop.ingest.columns import HASH, KEY, KEYHASH, NATURAL, ROW, SAME, STATUS
from rosterdrop.ingest.kept import Kept
from rosterdrop.roster import store
from rosterdrop.roster.hashes import Records
from rosterdrop.roster.models import ENTITIES
from rosterdrop.roster.store import ROW_ID
from rosterdrop.timing import timed

# Records confirmed unchanged at a time (see _confirmed_same).
CONFIRM_ROWS = 500_000
# Written records per part of the new snapshot.
WRITE_ROWS = 200_000
COUNTS = ("added", "updated", "removed", "reactivated", "unchanged")


def _no_places() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


class RowIds:
    """Row IDs (ROW_ID) by place: a spill's row numbers (apply), or the rows of a frame
    (`_written`), each the ID of the roster's record written there, where known. Kept as 0
    for not known (no row has ID 0), given and taken as null."""

    def __init__(self, places: int):
        self._ids = np.zeros(places, dtype=np.int64)

    def put(self, places: np.ndarray, ids: pl.Series | np.ndarray | None) -> None:
        """The IDs (null, or None for all: not known) of the records at `places`."""
        if ids is not None and len(places):
            self._ids[places] = ids.fill_null(0).to_numpy() if isinstance(ids, pl.Series) else ids

    def of(self, places: np.ndarray | None = None) -> pl.Series:
        """ROW_ID of the records at `places` (all, if None), in order: null where not known."""
        known = pl.Series(ROW_ID, self._ids if places is None else self._ids[places])
        return pl.select(pl.when(known != 0).then(known).alias(ROW_ID)).to_series()


@dataclass
class EntityPlan:
    entity: str
    added: pl.Series  # _row numbers of new records
    updated: pl.Series  # _row numbers of records whose content changed
    reactivated: pl.Series  # _row numbers of records coming back from tobedeleted
    # The active records to mark tobedeleted: their keys and their row IDs (ROW_ID) as the
    # snapshot knows them (null: not known), one frame (`removals`), so that the two never
    # part; apply seeks them by ID (store.seeks_by_id).
    removals: pl.DataFrame
    unchanged: int
    active_before: int
    # Records arriving under a new ID, matched by their natural key: _row, _key, _old_key,
    # and ROW_ID, the row ID of the record renamed (it keeps it under its new ID).
    renamed: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(
            schema={ROW: pl.UInt32, KEY: pl.String, "_old_key": pl.String, ROW_ID: pl.Int64}
        )
    )
    # _row and ROW_ID of the records it writes again (updated, reactivated, renamed): the row
    # ID of the roster's record each one rewrites, as the snapshot knows it (null: not known).
    rewritten_ids: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={ROW: pl.UInt32, ROW_ID: pl.Int64})
    )
    # Where, among the roster's records, are those renamed (their old IDs, among `marked_at`),
    # ascending: the row there keeps its row ID under the new ID, and the one left under the
    # old ID gets a new one, which the next snapshot does not know yet.
    renamed_at: np.ndarray = field(default_factory=_no_places)
    # Keys of active records a full file left out but did not validly leave out (kept.py):
    # not removed, not changed.
    kept: pl.Series = field(default_factory=lambda: pl.Series(KEY, [], pl.String))
    # _row numbers of a delta's tobedeleted rows naming no record of the roster: nothing to
    # remove, and the district is told (engine.py).
    unknown: pl.Series = field(default_factory=lambda: pl.Series(ROW, [], pl.UInt32))
    # Removed records whose natural key comes back under an ID the roster holds tobedeleted,
    # reactivated: a rename back (a renamed record left its old ID so), not a removal for the
    # removal guard.
    renamed_back: int = 0
    # Where, among the roster's records of the entity it was planned against (hashes.Records,
    # in snapshot order), are the records it writes again (updated, reactivated) and those it
    # marks tobedeleted (removed, and the old IDs of renamed ones), ascending: the next
    # snapshot drops and marks them there (`Plan.applied_to`), no key looked up.
    rewritten_at: np.ndarray = field(default_factory=_no_places)
    marked_at: np.ndarray = field(default_factory=_no_places)

    @property
    def removed(self) -> pl.Series:
        """The keys of the records to mark tobedeleted (`removals`)."""
        return self.removals[KEY]

    @property
    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated) + self.renamed.height,
            "removed": len(self.removed),
            "reactivated": len(self.reactivated),
            "unchanged": self.unchanged,
        }

    @property
    def guarded_removals(self) -> int:
        """The removals the removal guard counts: renames back are none."""
        return len(self.removed) - self.renamed_back

    @property
    def removal_share(self) -> float:
        return self.guarded_removals / self.active_before if self.active_before else 0.0


@dataclass
class Plan:
    entities: dict[str, EntityPlan] = field(default_factory=dict)
    # What it would end and start, when it starts a new school year (ingest/rollover.py).
    rollover: dict[str, Any] | None = None

    @property
    def changes(self) -> dict[str, dict[str, int]]:
        return {e: p.counts for e, p in self.entities.items()}

    @property
    def has_changes(self) -> bool:
        return any(
            n for p in self.entities.values() for k, n in p.counts.items() if k != "unchanged"
        )

    @property
    def growth(self) -> tuple[dict[str, int], dict[str, int]]:
        """Per entity, records added and active records before."""
        plans = self.entities.items()
        return {e: len(p.added) for e, p in plans}, {e: p.active_before for e, p in plans}

    def over_threshold(self, threshold: float) -> list[EntityPlan]:
        return [p for p in self.entities.values() if p.removal_share > threshold]

    def applied_to(
        self,
        old: Iterable[tuple[str, pa.RecordBatch]],
        accepted: dict[str, pl.DataFrame],
        added_ids: Mapping[str, np.ndarray] = MappingProxyType({}),
    ) -> Iterator[pa.RecordBatch | pl.DataFrame]:
        """The roster's snapshot (store.SNAPSHOT_SCHEMA) after this plan, in parts, made from
        the old one's (`hashes.Snapshot.parts`, kept in Arrow: its millions of keys are never
        converted). Records stay grouped by entity as `hashes.Snapshot` expects: an
        entity's written records follow its old ones. Row IDs: a record written again keeps
        the one it had, a new one has that of `added_ids` (per entity, in the order of its
        `added`: a store.Loader's) or none known yet, and a renamed record's old ID none.

        A part at a time: neither snapshot is ever whole in memory.
        """
        pending = [e for e in ENTITIES if e in self.entities]  # written records still to go
        for entity, parts in itertools.groupby(old, key=itemgetter(0)):
            while pending and ENTITIES.index(pending[0]) < ENTITIES.index(entity):
                yield from self._written_rows(pending.pop(0), accepted, added_ids)
            ep = self.entities.get(entity)
            if ep is None:
                yield from (part for _, part in parts)
                continue
            start = 0  # the place of a part's first record among the entity's
            for _, part in parts:
                yield _kept(part, ep, start)
                start += len(part)
            pending.remove(entity)
            yield from self._written_rows(entity, accepted, added_ids)
        for entity in pending:
            yield from self._written_rows(entity, accepted, added_ids)

    def _written_rows(
        self, entity: str, accepted: dict[str, pl.DataFrame], added_ids: Mapping[str, np.ndarray]
    ) -> Iterator[pl.DataFrame]:
        ep = self.entities[entity]
        return _snapshot_rows(entity, _written(ep, accepted[entity], added_ids.get(entity)))


def _snapshot_rows(entity: str, written: pl.DataFrame) -> Iterator[pl.DataFrame]:
    """Written records as snapshot rows, a part at a time."""
    natural = NATURAL if NATURAL in written.columns else pl.lit(None, pl.Int64).alias(NATURAL)
    rows = written.select(
        pl.lit(entity, store.SNAPSHOT_SCHEMA["entity"]).alias("entity"),
        KEY,
        KEYHASH,
        HASH,
        pl.lit("active", store.SNAPSHOT_SCHEMA["status"]).alias("status"),
        natural,
        ROW_ID,
    )
    yield from rows.iter_slices(WRITE_ROWS)


def _kept(old: pa.RecordBatch, ep: EntityPlan, start: int) -> pa.RecordBatch:
    """Old records as they stay: without those written again, removed ones (and the old IDs
    of renamed ones, store.rename_records, with no row ID known) tobedeleted. `start`: the
    place of the part's first record among the entity's, where the plan's places count from."""
    end = start + len(old)
    renamed = _within(ep.renamed_at, start, end)
    if len(renamed):
        # The row there is the renamed record's, under its new ID; the old ID's is new.
        at = np.zeros(len(old), dtype=bool)
        at[renamed] = True
        ids = pc.if_else(pa.array(at), pa.scalar(None, pa.int64()), old.column(ROW_ID))
        old = old.set_column(old.schema.get_field_index(ROW_ID), old.schema.field(ROW_ID), ids)
    gone = np.zeros(len(old), dtype=bool)
    gone[_within(ep.marked_at, start, end)] = True
    rewritten = _within(ep.rewritten_at, start, end)
    if len(rewritten):
        stays = np.ones(len(old), dtype=bool)
        stays[rewritten] = False
        old, gone = old.filter(pa.array(stays)), gone[stays]
    if not gone.any():
        return old
    status = old.column("status")
    tobedeleted = status.dictionary.to_pylist().index("tobedeleted")
    indices = np.where(gone, tobedeleted, status.indices.to_numpy(zero_copy_only=False))
    marked = pa.DictionaryArray.from_arrays(
        pa.array(indices, type=status.type.index_type), status.dictionary, ordered=True
    )
    return old.set_column(old.schema.get_field_index("status"), old.schema.field("status"), marked)


def _within(places: np.ndarray, start: int, end: int) -> np.ndarray:
    """The ascending `places` in [start, end), counted from `start`."""
    low, high = np.searchsorted(places, [start, end])
    within: np.ndarray = places[low:high] - start
    return within


def _written(
    ep: EntityPlan, accepted: pl.DataFrame, added_ids: np.ndarray | None = None
) -> pl.DataFrame:
    """The accepted records this plan writes (added, updated, reactivated, renamed), with
    their row IDs (ROW_ID): those of the records they rewrite, `added_ids` for the added
    ones (in the order of `ep.added`), else null.

    Picked by position with a mask (accepted rows keep ascending row numbers), and not
    copied at all when every record is written, as in a first import of millions.
    """
    rows = np.concatenate(
        [s.to_numpy() for s in (ep.added, ep.updated, ep.reactivated, ep.renamed[ROW])]
    )
    written = accepted
    if len(rows) != accepted.height:
        picked = np.zeros(accepted.height, dtype=bool)
        picked[np.searchsorted(accepted[ROW].to_numpy(), rows)] = True
        written = accepted.filter(pl.Series(picked))
    numbers = written[ROW].to_numpy()
    ids = RowIds(len(numbers))
    ids.put(_places(numbers, ep.added.to_numpy()), added_ids)
    ids.put(_places(numbers, ep.rewritten_ids[ROW].to_numpy()), ep.rewritten_ids[ROW_ID])
    return written.with_columns(ids.of())


def _places(numbers: np.ndarray, these: np.ndarray) -> np.ndarray:
    """Where the row numbers `these` are among the ascending `numbers`: themselves when
    `numbers` are 0, 1, 2... (a first import's, millions: no search)."""
    if len(numbers) and numbers[0] == 0 and numbers[-1] == len(numbers) - 1:
        return these
    return np.searchsorted(numbers, these)


@timed("plan_entity")
def plan_entity(
    entity: str, mode: str, incoming: pl.DataFrame, roster: Records, spared: Kept | None = None
) -> EntityPlan:
    """incoming: _key, _keyhash, _hash, _status, _row [, _natural, _same];
    roster: the roster's records of the entity (hashes.Records), in the order the spill's
    SAME positions refer to; `spared`: what a full file keeps as it was, whatever it leaves out.

    Records are matched by key hash, and only the few candidates that are not confirmed the
    same are then compared by their key strings, read from the snapshot file for them alone.
    """
    current = roster.frame
    if not current.height:
        # Nothing to compare with (a district's first import): every live record is new.
        # Joining millions of keys against nothing still hashes them all (5M: 1.5-1.9 s).
        added = incoming.filter(pl.col(STATUS) == "active")[ROW]
        unknown = incoming.filter(pl.col(STATUS) == "tobedeleted")[ROW]
        nothing = added.clear()
        return EntityPlan(entity, added, nothing, nothing, _removals(), 0, 0, unknown=unknown)
    # Only the columns each step needs, unfiltered where nothing is filtered: on millions of
    # records every copied column costs hundreds of MB.
    is_live = incoming[STATUS] == "active"
    live = incoming if is_live.all() else incoming.filter(is_live)
    same, kept = _confirmed_same(live, current)
    rest = live.filter(~same) if same.any() else live
    if rest[KEY].null_count():
        # Records the spill matched with the roster let their keys go (keys.EntityRows) and
        # were not spilled; one that is not confirmed here (a fingerprint collision, or a
        # snapshot rebuilt meanwhile) cannot be written: stop, nothing applied.
        raise RuntimeError(f"{entity} records matched by fingerprint are not in the roster")
    # The roster's records of the other keys sent: found by key hash, then paired by key.
    theirs = _with_keys(roster, rest[KEYHASH])
    joined = rest.select(KEY, HASH, ROW).join(theirs, on=KEY, how="left")
    new = joined["_old_hash"].is_null()
    back = joined["_old_status"] == "tobedeleted"
    differs = (joined[HASH] != joined["_old_hash"]) & ~back
    was_active = (current["status"] == "active").to_numpy()
    if mode == "bulk":
        # Active records neither confirmed the same nor among the others sent.
        sent = np.zeros(current.height, dtype=bool)
        sent[joined["_at"].drop_nulls().to_numpy()] = True
        gone = np.flatnonzero(was_active & ~kept & ~sent)
        unknown = incoming[ROW].clear()
    else:
        # The records a delta's tobedeleted rows name, active ones removed; those already
        # tobedeleted stay so.
        deleted = incoming.filter(pl.col(STATUS) == "tobedeleted").select(KEY, KEYHASH, ROW)
        theirs = _with_keys(roster, deleted[KEYHASH]).select(KEY, "_at")
        named = deleted.join(theirs, on=KEY, how="left")
        unknown = named.filter(pl.col("_at").is_null())[ROW]
        at = named["_at"].drop_nulls().to_numpy()
        gone = at[was_active[at]]
    removals = _removals(roster.keys(gone), roster.ids(gone))
    left = removals[KEY].clear()  # as it was: the file did not validly leave these out
    if mode == "bulk" and spared is not None:
        keep = spared.spared(removals[KEY])
        if keep.any():
            gone, left = gone[~keep], removals[KEY].filter(keep)
            removals = removals.filter(~keep)
    updated = ~new & differs.fill_null(False)
    back = back.fill_null(False)
    rewritten = joined.filter(updated | back).select(ROW, "_at")
    plan = EntityPlan(
        entity=entity,
        added=joined.filter(new)[ROW],
        updated=joined.filter(updated)[ROW],
        reactivated=joined.filter(back)[ROW],
        removals=removals,
        rewritten_ids=pl.DataFrame(
            {ROW: rewritten[ROW], ROW_ID: roster.ids(rewritten["_at"].to_numpy())}
        ),
        unchanged=int(same.sum()) + int((~new & ~back & ~differs.fill_null(False)).sum()),
        active_before=int(was_active.sum()),
        kept=left,
        unknown=unknown,
        rewritten_at=np.sort(rewritten["_at"].to_numpy().astype(np.int64)),
        # Renamed records (_match_renamed) are among these: their old IDs stay tobedeleted.
        marked_at=np.sort(np.asarray(gone, dtype=np.int64)),
    )
    if NATURAL in incoming.columns and len(plan.removed):
        leaving = pl.DataFrame(
            {
                "_old_key": plan.removed,
                NATURAL: current[NATURAL].gather(gone),
                ROW_ID: plan.removals[ROW_ID],
                "_at": pl.Series(gone, dtype=pl.Int64),
            }
        )
        arriving = live.select(ROW, KEY, NATURAL)
        if len(plan.added):
            _match_renamed(plan, arriving.filter(pl.col(ROW).is_in(plan.added.implode())), leaving)
        if len(plan.reactivated):
            returning = arriving.filter(pl.col(ROW).is_in(plan.reactivated.implode()))
            still = leaving.filter(pl.col("_old_key").is_in(plan.removed.implode()))
            plan.renamed_back = _pairs(returning, still).height
    return plan


def _removals(keys: pl.Series | None = None, ids: pl.Series | None = None) -> pl.DataFrame:
    """An EntityPlan's `removals`: the records' keys and row IDs (none given: no records)."""
    schema = {KEY: pl.String, ROW_ID: pl.Int64}
    if keys is None or ids is None:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame({KEY: keys, ROW_ID: ids}, schema=schema)


def _with_keys(roster: Records, keyhashes: pl.Series) -> pl.DataFrame:
    """The roster's records whose key hash is among `keyhashes`, with their keys: _key,
    _old_hash, _old_status, _at (position). A key hash shared by two keys gives both; the
    caller pairs them by key."""
    current = roster.frame
    at = np.flatnonzero(current[KEYHASH].is_in(keyhashes.implode()).to_numpy())
    return pl.DataFrame(
        {
            KEY: roster.keys(at),
            "_old_hash": current[HASH].gather(at),
            "_old_status": current["status"].gather(at),
            "_at": pl.Series(at, dtype=pl.UInt32),
        }
    )


def _confirmed_same(live: pl.DataFrame, current: pl.DataFrame) -> tuple[pl.Series, np.ndarray]:
    """Records the spill matched by fingerprint (SAME) and that are the roster's active
    record at that position, with the same key hash and content hash: 128 bits compared, on
    top of the 64-bit fingerprint that found them.

    Returns the mask over `live`, and over `current` the records so confirmed. Confirming
    millions of matches by position is a gather and a compare, much cheaper than joining them;
    done a slice at a time. A slice that names one stretch of the roster in its order (a file
    taken whole, its lines kept in the roster's order) is compared with that stretch in place:
    5M enrollments in 0.12 s of CPU, against 0.3 gathered.
    """
    kept = np.zeros(current.height, dtype=bool)
    if SAME not in live.columns or not current.height:
        return pl.repeat(False, live.height, eager=True), kept
    parts = []
    for start in range(0, live.height or 1, CONFIRM_ROWS):  # one slice, if empty
        sent = live.slice(start, CONFIRM_ROWS)
        position = sent[SAME]
        first = _stretch(position, current.height)
        if first is not None:
            usable = pl.repeat(True, sent.height, eager=True)
            roster = current.slice(first, sent.height)
        else:
            # A position beyond the roster (its snapshot rebuilt meanwhile) confirms nothing.
            usable = position.is_not_null() & (position < current.height)
            where = pl.select(pl.when(usable).then(position).otherwise(0)).to_series()
            roster = current.gather(where)
        same = (
            usable
            & (roster[KEYHASH] == sent[KEYHASH])
            & (roster[HASH] == sent[HASH])
            & (roster["status"] == "active")
        ).fill_null(False)
        kept[position.filter(same).to_numpy()] = True
        parts.append(same)
    return pl.concat(parts), kept


def _stretch(position: pl.Series, height: int) -> int | None:
    """Where the roster's records that `position` names start, if they are the stretch of
    the roster that starts there, in its order (of `height` records); else None."""
    if not len(position) or position.null_count():
        return None
    at = position.to_numpy()
    first, last = int(at[0]), int(at[-1])
    if last - first != len(at) - 1 or last >= height or not np.all(at[1:] > at[:-1]):
        return None
    return first


def _match_renamed(plan: EntityPlan, new: pl.DataFrame, leaving: pl.DataFrame) -> None:
    """Pair records that would be added with records that would be removed (`leaving`:
    _old_key, _natural, ROW_ID and _at, their row IDs and places), by natural key.

    Compared by the natural key's 64-bit hash, kept in the snapshot: no record data is read.
    A natural key that appears more than once on either side is ambiguous and left alone.
    """
    if not len(plan.added) or not len(plan.removed):
        return
    pairs = _pairs(new, leaving)
    if not pairs.height:
        return
    plan.renamed = pairs.select(ROW, KEY, "_old_key", ROW_ID)
    plan.renamed_at = np.sort(pairs["_at"].to_numpy())
    plan.rewritten_ids = pl.concat([plan.rewritten_ids, pairs.select(ROW, ROW_ID)])
    plan.added = plan.added.filter(~plan.added.is_in(pairs[ROW].implode()))
    plan.removals = plan.removals.filter(~pl.col(KEY).is_in(pairs["_old_key"].implode()))


def _pairs(arriving: pl.DataFrame, leaving: pl.DataFrame) -> pl.DataFrame:
    """Arriving records (_row, _key, _natural) paired with leaving ones (_old_key, _natural,
    and any other columns) by natural key hash: _row, _key, _old_key and leaving's other
    columns. A natural key that appears more than once on either side is ambiguous and left
    out."""
    arriving = arriving.select(ROW, KEY, NATURAL).drop_nulls(NATURAL)
    arriving = arriving.unique(subset=NATURAL, keep="none")
    leaving = leaving.drop_nulls(NATURAL).unique(subset=NATURAL, keep="none")
    paired = arriving.join(leaving, on=NATURAL)
    others = [c for c in leaving.columns if c not in (NATURAL, "_old_key")]
    return paired.select(ROW, KEY, "_old_key", *others)
