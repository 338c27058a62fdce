"""Apply: write a plan to the roster in the caller's transaction, only what changed.

Record data comes back from the spill files written while reading, a key range at a time, so
memory stays bounded however large the district, and new records go in in key order; many of
them go through staged files (roster/staging.py).
"""

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa

from rosterdrop.ingest.ahead import ahead
from rosterdrop.ingest.columns import HASH, KEY, ROW
from rosterdrop.ingest.plan import EntityPlan, Plan, RowIds
from rosterdrop.ingest.spill import Spill
from rosterdrop.roster import staging, store
from rosterdrop.roster.schema import FIELDS, METADATA
from rosterdrop.roster.staging import Staged
from rosterdrop.roster.store import Cursor
from rosterdrop.timing import timed

# Rows of record data in memory at once while writing.
WINDOW = 100_000
CHANGE_COLUMNS = (
    "sync_id", "entity", "sourced_id", "action", "fields", "record_id", "left_record_id",
)  # fmt: skip


@timed("field changes", batch=True)
def field_changes(pairs: pl.DataFrame, fields: Sequence[str]) -> list[list[dict[str, Any]]]:
    """For each row of `pairs` (the entity's `fields` and METADATA as JSON text or null, after
    and, suffixed _old, before), [{field, before, after}] for every field and metadata column
    that differs, by field name.

    Worked out a field at a time over every row (null equals null), and in Python only for
    the values that differ: a 1% change at `huge` updates ~62k records in one or two fields
    (a record at a time, two dicts of every field compared: ~2 s of CPU)."""
    changed: list[list[dict[str, Any]]] = [[] for _ in range(pairs.height)]
    for name in fields:
        at = np.flatnonzero(pairs[name].ne_missing(pairs[f"{name}_old"]).to_numpy())
        if not len(at):
            continue
        before, after = pairs[f"{name}_old"].gather(at), pairs[name].gather(at)
        for row, old, new in zip(at.tolist(), before.to_list(), after.to_list(), strict=True):
            changed[row].append({"field": name, "before": old, "after": new})
    metadata = pairs[METADATA].ne_missing(pairs[f"{METADATA}_old"]).to_numpy()
    for row in np.flatnonzero(metadata).tolist():
        old = json.loads(pairs[f"{METADATA}_old"][row] or "{}")
        new = json.loads(pairs[METADATA][row] or "{}")
        changed[row] += [
            {"field": f"{METADATA}.{name}", "before": old.get(name), "after": new.get(name)}
            for name in set(old) | set(new)
            if old.get(name) != new.get(name)
        ]
    for entries in changed:
        if len(entries) > 1:
            entries.sort(key=lambda entry: str(entry["field"]))
    return changed


@timed("apply_plan")
def apply_plan(
    conn: Cursor,
    plan: Plan,
    spills: dict[str, Spill],
    district_id: int,
    sync_id: int,
    named: Mapping[str, tuple[str, ...]] = MappingProxyType({}),
    loaded: Mapping[str, store.Loaded] = MappingProxyType({}),
) -> "Applied":
    """Write the plan; what the caller needs of it after (`Applied`). `loaded`: the entities
    whose records a store.Loader copied while the files were read (a first import's)."""
    changes: list[tuple[Any, ...]] = []
    bulk = _Bulk.for_plan(plan)
    if not bulk.part:
        store.cache_for_rewrites(conn)
    applied = Applied()
    columns = store.new_record_columns(district_id, sync_id)
    written = {e: ep for e, ep in plan.entities.items() if e not in loaded}
    # One thread makes every entity's windows, in the order they are written: the next
    # entity's first staged file is made while this one's last is copied, instead of the
    # database waiting for it at each entity (five entities staged at `huge`).
    with closing(ahead(_all_windows(written, spills, bulk, columns), depth=1)) as windows:
        for entity, ep in plan.entities.items():
            spill, fields = spills[entity], named.get(entity, ())
            if entity in loaded:
                analyzed = _finish_loaded(conn, ep, spill, loaded[entity])
                if len(ep.added) == loaded[entity].rows:  # none refused: one run of IDs
                    applied.created[entity] = (loaded[entity].first_id, loaded[entity].rows)
                removed = pl.DataFrame(schema=dict.fromkeys([KEY, *fields], pl.String))
            else:
                before = store.last_id(conn, entity) if store.ids_appended() else None
                analyzed, removed = _apply_entity(
                    conn, ep, _until_next(windows), district_id, sync_id, changes, fields,
                    applied.updated.setdefault(entity, set()),
                )  # fmt: skip
                if before is not None and _appended(conn, ep, before):
                    applied.created[entity] = (before + 1, len(ep.added))
            if analyzed:
                applied.analyzed.add(entity)
            if entity in named:
                applied.marked[entity] = removed
    store.insert_rows(conn, "ingest_change", list(CHANGE_COLUMNS), changes)
    return applied


def _appended(conn: Cursor, ep: EntityPlan, before: int) -> bool:
    """Whether the entity's new records are the IDs after `before`, the table's highest before
    apply wrote them, one after another (store.ids_appended): a rename inserts rows too, and
    whatever else moved the highest ID by other than their number leaves them to be counted."""
    added = len(ep.added)
    return (
        bool(added) and not ep.renamed.height and store.last_id(conn, ep.entity) == before + added
    )


@dataclass
class Applied:
    """What an apply tells its caller: the entities whose statistics the transaction made
    again with every record in (store.lookups_built_after), for store.refresh_statistics
    after the commit; per entity of the `named` fields asked, the _key and those fields of
    the records it marked removed (what they named, for ingest.gaps), as the statement
    marking them read them; per entity, the fields any of its updated records changed
    (their change rows' "field" names: what ingest.gaps asks of its updates); per entity whose
    every record a store.Loader copied and the plan kept, or whose new records apply appended
    (store.ids_appended), their first row ID and how many (consecutive IDs: the feed's created
    range, known without counting the table, whose `_first_seen` a first import leaves to
    after its sync)."""

    analyzed: set[str] = field(default_factory=set)
    marked: dict[str, pl.DataFrame] = field(default_factory=dict)
    updated: dict[str, set[str]] = field(default_factory=dict)
    created: dict[str, tuple[int, int]] = field(default_factory=dict)


ADDED, UPDATED, REACTIVATED = 1, 2, 3
# New records go to the database through staged files (roster/staging.py) when an entity has
# at least this many, in parts of at least this many: each part costs a file and attaching it.
STAGE_MIN_ROWS = 100_000
# SQLite attaches at most 10 files to one connection, and the transaction keeps them all.
STAGED_FILES = 10


@dataclass
class _Bulk:
    """How an apply hands new records to the database: an entity with at least STAGE_MIN_ROWS
    of them, in staged files of at least `part` rows (no files if 0); others as rows."""

    part: int

    @classmethod
    def for_plan(cls, plan: Plan) -> "_Bulk":
        """The smallest part that needs no more than STAGED_FILES files in all."""
        added = [len(ep.added) for ep in plan.entities.values()]
        many = [n for n in added if n >= STAGE_MIN_ROWS]
        if not store.stages_new_records() or not many:
            return cls(part=0)
        part = STAGE_MIN_ROWS
        while sum(-(-n // part) for n in many) > STAGED_FILES:
            part += STAGE_MIN_ROWS
        return cls(part=part)

    def files(self, ep: EntityPlan) -> bool:
        """Whether the entity's new records go to staged files."""
        return bool(self.part) and len(ep.added) >= STAGE_MIN_ROWS


@dataclass
class Window:
    """Spilled rows to write, in key order: updated and reactivated ones (with _action) as
    rows, added ones as rows, a staged file or formatted CSV."""

    changed: pl.DataFrame
    added: pl.DataFrame | Staged | store.Formatted


def _finish_loaded(conn: Cursor, ep: EntityPlan, spill: Spill, loaded: store.Loaded) -> bool:
    """An entity whose every spilled record is in its table already (store.Loader): the plan
    of a table that was empty only adds, and of what was spilled, only what it adds stays.
    Whether the table's statistics were made (store.finish_load)."""
    others = len(ep.updated) + len(ep.reactivated) + len(ep.removed) + ep.renamed.height
    if others or spill.spilled != spill.rows or loaded.rows != spill.rows:
        # Not a plan against an empty table: stop, roll back.
        raise RuntimeError(f"the {ep.entity} copied while reading are not what the plan adds")
    return store.finish_load(conn, ep.entity, loaded, ep.added.to_numpy())


def _apply_entity(
    conn: Cursor,
    ep: EntityPlan,
    windows: Iterator[Window],
    district_id: int,
    sync_id: int,
    changes: list[tuple[Any, ...]],
    named: tuple[str, ...],
    fields: set[str],
) -> tuple[bool, pl.DataFrame]:
    """Write what the plan says, its `windows` (from the spill, in key order). Returns whether
    the entity's statistics were made again (store.lookups_built_after), and the _key and
    `named` fields of the records marked removed; adds to `fields` those its updates changed."""
    renamed = pl.DataFrame(schema={KEY: pl.String, "_old_key": pl.String, "_left_id": pl.Int64})
    if ep.renamed.height:
        # Renamed first, so that they are then updated like any record under their new ID.
        renamed = store.rename_records(conn, district_id, ep.entity, sync_id, ep.renamed)
    with store.lookups_built_after(conn, ep.entity, len(ep.added), district_id) as analyzed:
        for window in windows:
            _apply_window(conn, ep, window, district_id, sync_id, changes, renamed, fields)
    nothing = _no_records(ep.entity)
    removed = store.write_records(
        conn, district_id, ep.entity, sync_id,
        added=nothing, changed=nothing, removed=ep.removals, returning=named,
    )  # fmt: skip
    ids = pl.DataFrame({KEY: ep.removed}).join(removed, on=KEY, maintain_order="left")
    changes.extend(
        (sync_id, ep.entity, key, "removed", "[]", record, None)
        for key, record in ids.select(KEY, "_id").iter_rows()
    )
    return analyzed, removed.select(KEY, *named)


# Where one entity's windows end and the next one's begin, in `_all_windows`.
_NEXT = None


def _all_windows(
    plans: dict[str, EntityPlan], spills: dict[str, Spill], bulk: _Bulk, columns: dict[str, object]
) -> Iterator[Window | None]:
    """Each entity's windows in turn, read from its spill, each entity's ended by _NEXT: no
    database work, so made in a thread ahead of the writes."""
    for entity, ep in plans.items():
        yield from _windows(ep, spills[entity], bulk, columns)
        yield _NEXT


def _until_next(windows: Iterator[Window | None]) -> Iterator[Window]:
    """The windows of the entity `windows` is at, up to the end of its own."""
    for window in windows:
        if window is _NEXT:
            return
        yield window


def _windows(
    ep: EntityPlan, spill: Spill, bulk: _Bulk, columns: dict[str, object]
) -> Iterator[Window]:
    """Read the spill once, a key range at a time, keeping only the rows the plan writes;
    `columns`: those new records get beside their data (store.new_record_columns)."""
    action = _actions(ep, spill)
    ids = RowIds(spill.rows)  # of the records written again, by their row numbers
    ids.put(ep.rewritten_ids[ROW].to_numpy(), ep.rewritten_ids[store.ROW_ID])
    missing = int(np.count_nonzero(action))
    files = bulk.files(ep)
    changed: list[pl.DataFrame] = []
    added: list[pl.DataFrame] = []
    for table in spill.ranges() if missing else ():
        wanted = action[table.column(ROW).to_numpy()]
        missing -= int(np.count_nonzero(wanted))
        if not wanted.any():
            continue
        # Filtered in Arrow, which copies the kept rows: nothing holds the whole range.
        kept = cast(pl.DataFrame, pl.from_arrow(table.filter(pa.array(wanted > 0))))
        del table
        kept = kept.with_columns(
            pl.Series("_action", wanted[wanted > 0]), ids.of(kept[ROW].to_numpy())
        ).sort(KEY)
        changed.append(kept.filter(pl.col("_action") != ADDED))
        added.append(kept.filter(pl.col("_action") == ADDED))
        if sum(f.height for f in changed) >= WINDOW:
            yield Window(pl.concat(changed), _no_records(ep.entity))
            changed = []
        if sum(f.height for f in added) >= (bulk.part if files else WINDOW):
            yield from _added_windows(ep.entity, pl.concat(added), spill.folder, files, columns)
            added = []
    if missing:
        # Only a fingerprint collision (spill.py) leaves out a record to write: stop, roll back.
        raise RuntimeError(f"{missing} {ep.entity} records to write were not spilled")
    if changed:
        yield Window(pl.concat(changed), _no_records(ep.entity))
    if added:
        yield from _added_windows(ep.entity, pl.concat(added), spill.folder, files, columns)


def _actions(ep: EntityPlan, spill: Spill) -> np.ndarray:
    """What apply does with each spilled row, by its row number (0: nothing)."""
    action = np.zeros(spill.rows, dtype=np.int8)
    for code, rows in ((ADDED, ep.added), (UPDATED, ep.updated), (UPDATED, ep.renamed[ROW])):
        action[rows.to_numpy()] = code
    action[ep.reactivated.to_numpy()] = REACTIVATED
    return action


def written(ep: EntityPlan, spill: Spill, fields: tuple[str, ...]) -> pl.DataFrame:
    """KEY, `fields` and _action (ADDED, UPDATED, REACTIVATED) of each record apply is to
    write, as it will be written (renamed ones under their new key): read from the spill
    before apply, for what must be known of them before the roster changes (ingest.gaps)."""
    action = _actions(ep, spill)
    columns = {KEY: pl.String, **dict.fromkeys(fields, pl.String), "_action": pl.Int8}
    parts = [pl.DataFrame(schema=columns)]
    for table in spill.ranges() if action.any() else ():
        wanted = action[table.column(ROW).to_numpy()]
        if wanted.any():
            kept = table.select([KEY, *fields]).filter(pa.array(wanted > 0))
            rows = cast(pl.DataFrame, pl.from_arrow(kept))
            parts.append(rows.with_columns(pl.Series("_action", wanted[wanted > 0], pl.Int8)))
    return pl.concat(parts, how="vertical_relaxed")


def _added_windows(
    entity: str, rows: pl.DataFrame, folder: Path, files: bool, columns: dict[str, object]
) -> Iterator[Window]:
    """New records made ready for the database here, in the thread ahead of the writes: a
    staged file (SQLite), or the CSV that COPY reads (PostgreSQL), so that the server copies
    one window while the next is formatted."""
    nothing = _no_records(entity)
    if files:
        yield Window(nothing, staging.stage(store.new_rows(entity, rows), folder))
        return
    for window in rows.iter_slices(WINDOW):
        if store.formats_new_records():
            yield Window(nothing, store.formatted(store.new_rows(entity, window), columns))
        else:
            yield Window(nothing, window)


def _no_records(entity: str) -> pl.DataFrame:
    columns = {KEY: pl.String, HASH: pl.Int64, METADATA: pl.String, "_action": pl.Int8}
    return pl.DataFrame(schema={**columns, **dict.fromkeys(FIELDS[entity], pl.String)})


def _apply_window(
    conn: Cursor,
    ep: EntityPlan,
    window: Window,
    district_id: int,
    sync_id: int,
    changes: list[tuple[Any, ...]],
    renamed: pl.DataFrame,
    fields: set[str],
) -> None:
    """Write a window, and its change rows with the row IDs written (`renamed`: _key,
    _old_key and _left_id, the row left under a renamed record's old ID); the fields its
    updates changed added to `fields`."""
    updated = window.changed.filter(pl.col("_action") == UPDATED)
    written = store.write_records(
        conn, district_id, ep.entity, sync_id,
        added=window.added, changed=window.changed, removed=_no_records(ep.entity).select(KEY),
        before=bool(updated.height),
    )  # fmt: skip
    if updated.height:
        fields.update(_updated(ep, sync_id, changes, updated, written, renamed))
    back = window.changed.filter(pl.col("_action") == REACTIVATED).select(KEY)
    back = back.join(written.select(KEY, "_id"), on=KEY, maintain_order="left")
    changes.extend(
        (sync_id, ep.entity, key, "reactivated", "[]", i, None) for key, i in back.iter_rows()
    )


def _updated(
    ep: EntityPlan,
    sync_id: int,
    changes: list[tuple[Any, ...]],
    updated: pl.DataFrame,
    written: pl.DataFrame,
    renamed: pl.DataFrame,
) -> set[str]:
    """The change rows of updated records (`updated`): their fields after, and before as
    `written` returned them (suffix _old; a renamed one's sourcedId first), and the row IDs
    written. Returns the fields they name."""
    pairs = updated.join(written, on=KEY, maintain_order="left")
    pairs = pairs.join(renamed, on=KEY, how="left", maintain_order="left")
    differs = field_changes(pairs, FIELDS[ep.entity])
    rows = pairs.select(KEY, "_old_key", "_id", "_left_id").iter_rows()
    for (key, old_key, record, left), fields in zip(rows, differs, strict=True):
        if old_key is not None:
            fields.insert(0, {"field": "sourcedId", "before": old_key, "after": key})
        changes.append((sync_id, ep.entity, key, "updated", json.dumps(fields), record, left))
    return {str(entry["field"]) for entries in differs for entry in entries}
