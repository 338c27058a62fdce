"""Apply: write a plan to the roster in the caller's transaction, only what changed.

Record data comes back from the spill files written while reading, a key range at a time, so
memory stays bounded however large the district, and new records go in in key order.
"""

import json

import numpy as np
import polars as pl
import pyarrow as pa

from rosterdrop.ingest.keys import ROW
from rosterdrop.ingest.plan import EntityPlan, Plan
from rosterdrop.ingest.spill import Spill
from rosterdrop.roster import store
from rosterdrop.roster.schema import FIELDS, HASH, KEY, METADATA

# Rows of record data in memory at once while writing.
WINDOW = 100_000
CHANGE_COLUMNS = ("sync_id", "entity", "sourced_id", "action", "fields")


def field_changes(before: dict, after: dict) -> list[dict]:
    """[{field, before, after}] for every canonical field (and metadata column) that differs.

    `before` and `after`: the record's fields, with its metadata as JSON text (or None).
    """
    old, new = dict(before), dict(after)
    for record in (old, new):
        extra = json.loads(record.pop(METADATA) or "{}")
        record.update({f"{METADATA}.{k}": v for k, v in extra.items()})
    return [
        {"field": name, "before": old.get(name), "after": new.get(name)}
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


def apply_plan(conn, plan: Plan, spills: dict[str, Spill], district_id: int, sync_id: int) -> None:
    changes: list[tuple] = []
    for entity, ep in plan.entities.items():
        _apply_entity(conn, ep, spills[entity], district_id, sync_id, changes)
        changes.extend((sync_id, entity, key, "removed", "[]") for key in ep.removed)
    store.insert_rows(conn, "ingest_change", list(CHANGE_COLUMNS), changes)


ADDED, UPDATED, REACTIVATED = 1, 2, 3


def _apply_entity(
    conn, ep: EntityPlan, spill: Spill, district_id: int, sync_id: int, changes: list
) -> None:
    """Read the spill once, a key range at a time, keeping only the rows the plan writes;
    written in key order."""
    if ep.renamed.height:
        # Renamed first, so that they are then updated like any record under their new ID.
        store.rename_records(conn, district_id, ep.entity, ep.renamed)
    # What to do with each spilled row, by its row number.
    action = np.zeros(spill.rows, dtype=np.int8)
    for code, rows in ((ADDED, ep.added), (UPDATED, ep.updated), (UPDATED, ep.renamed[ROW])):
        action[rows.to_numpy()] = code
    action[ep.reactivated.to_numpy()] = REACTIVATED
    pending: list[pl.DataFrame] = []
    missing = int(np.count_nonzero(action))
    for table in spill.ranges() if missing else ():
        wanted = action[table.column(ROW).to_numpy()]
        missing -= int(np.count_nonzero(wanted))
        if not wanted.any():
            continue
        # Filtered in Arrow, which copies the kept rows: nothing holds the whole range.
        kept = pl.from_arrow(table.filter(pa.array(wanted > 0)))
        del table
        pending.append(kept.with_columns(pl.Series("_action", wanted[wanted > 0])).sort(KEY))
        if sum(p.height for p in pending) >= WINDOW:
            _apply_windows(conn, ep, pl.concat(pending), district_id, sync_id, changes)
            pending = []
    if missing:
        # Only a fingerprint collision (spill.py) leaves out a record to write: stop, roll back.
        raise RuntimeError(f"{missing} {ep.entity} records to write were not spilled")
    if pending:
        _apply_windows(conn, ep, pl.concat(pending), district_id, sync_id, changes)
    nothing = _no_records(ep.entity)
    store.write_records(
        conn, district_id, ep.entity, sync_id,
        added=nothing, changed=nothing, removed=pl.DataFrame({KEY: ep.removed}),
    )  # fmt: skip


def _no_records(entity: str) -> pl.DataFrame:
    columns = {KEY: pl.String, HASH: pl.Int64, METADATA: pl.String}
    return pl.DataFrame(schema={**columns, **dict.fromkeys(FIELDS[entity], pl.String)})


def _apply_windows(conn, ep: EntityPlan, rows: pl.DataFrame, district_id, sync_id, changes):
    for window in rows.iter_slices(WINDOW):
        _apply_window(conn, ep, window, district_id, sync_id, changes)


def _apply_window(conn, ep: EntityPlan, window: pl.DataFrame, district_id, sync_id, changes):
    added = window.filter(pl.col("_action") == ADDED)
    updated = window.filter(pl.col("_action") == UPDATED)
    back = window.filter(pl.col("_action") == REACTIVATED)
    if updated.height:
        old = store.old_data(conn, district_id, ep.entity, updated.select(KEY))
        old_ids = dict(ep.renamed.select(KEY, "_old_key").iter_rows()) if ep.renamed.height else {}
        stored = [*FIELDS[ep.entity], METADATA]
        pairs = updated.select(KEY, *stored).join(old, on=KEY, suffix="_old")
        for row in pairs.iter_rows(named=True):
            key = row[KEY]
            after = {name: row[name] for name in stored}
            before = {name: row[f"{name}_old"] for name in stored}
            fields = field_changes(before, after)
            if key in old_ids:
                fields.insert(0, {"field": "sourcedId", "before": old_ids[key], "after": key})
            changes.append((sync_id, ep.entity, key, "updated", json.dumps(fields)))
    changes.extend((sync_id, ep.entity, key, "reactivated", "[]") for key in back[KEY])
    store.write_records(
        conn, district_id, ep.entity, sync_id,
        added=added, changed=pl.concat([updated, back]), removed=_no_records(ep.entity).select(KEY),
    )  # fmt: skip
