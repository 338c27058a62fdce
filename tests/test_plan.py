"""The plan is the same whether the spill's fingerprint matches (SAME) are right, wrong or
missing: they only spare it a join, they never decide what changed."""

import numpy as np
import polars as pl
import pytest

from rosterdrop.ingest import plan
from rosterdrop.ingest.plan import plan_entity
from rosterdrop.roster.hashes import Records
from rosterdrop.roster.natural import key_hash

STATUS = pl.Enum(["active", "tobedeleted"])


def _roster() -> pl.DataFrame:
    """k00..k09 active, k10 tobedeleted; row IDs 100 + i, k04's not known."""
    return pl.DataFrame(
        {
            "_key": [f"k{i:02d}" for i in range(11)],
            "_hash": list(range(11)),
            "status": pl.Series(["active"] * 10 + ["tobedeleted"], dtype=STATUS),
            "_natural": [None] * 11,
            "_rowid": [100 + i if i != 4 else None for i in range(11)],
        },
        schema_overrides={"_natural": pl.Int64, "_rowid": pl.Int64},
    ).with_columns(key_hash(pl.col("_key")).alias("_keyhash"))


class _Snapshot:
    """Keys by position, as hashes.Snapshot reads them from its file."""

    def __init__(self, keys: pl.Series):
        self._keys = keys

    def keys(self, entity, positions):
        return self._keys.gather(positions)


def _records(roster: pl.DataFrame) -> Records:
    """As hashes.Snapshot.entities gives them: hashes in memory, keys read when asked for."""
    return Records(roster.drop("_key"), "users", _Snapshot(roster["_key"]))


def _upload() -> pl.DataFrame:
    """k00..k05 as they are, k06 changed, k07..k09 not sent (removed), k10 back, k11 new."""
    keys = [f"k{i:02d}" for i in (*range(7), 10, 11)]
    hashes = [0, 1, 2, 3, 4, 5, 66, 10, 11]
    return pl.DataFrame(
        {
            "_key": keys,
            "_hash": hashes,
            "_status": pl.Series(["active"] * len(keys), dtype=pl.Categorical),
            "_row": pl.Series(range(len(keys)), dtype=pl.UInt32),
        }
    ).with_columns(key_hash(pl.col("_key")).alias("_keyhash"))


def _positions(kind: str) -> list[int | None]:
    right = [0, 1, 2, 3, 4, 5, None, None, None]  # what the spill finds for this upload
    return {
        "right": right,
        "wrong": [9, 8, 7, 6, 0, 1, 2, 10, 3],  # as if every fingerprint had collided
        "beyond": [100, 1, 2, 3, 4, 5, None, None, 4000],  # a snapshot rebuilt meanwhile
    }[kind]


def _summary(plan):
    return (
        plan.counts,
        sorted(plan.added.to_list()),
        sorted(plan.updated.to_list()),
        sorted(plan.reactivated.to_list()),
        sorted(plan.removed.to_list()),
    )


@pytest.mark.parametrize("slice_rows", [500_000, 2])
@pytest.mark.parametrize("kind", ["right", "wrong", "beyond"])
@pytest.mark.parametrize("key_hashes", ["distinct", "all alike"])
def test_fingerprint_matches_never_change_the_plan(kind, slice_rows, key_hashes, monkeypatch):
    # Matches are confirmed a slice at a time; slices of 2 records cut this upload into 5.
    monkeypatch.setattr(plan, "CONFIRM_ROWS", slice_rows)
    roster, upload = _roster(), _upload()
    if key_hashes == "all alike":  # records are then told apart by their keys alone
        roster, upload = (
            f.with_columns(pl.lit(7, pl.UInt64).alias("_keyhash")) for f in (roster, upload)
        )
    expected = _summary(plan_entity("users", "bulk", upload, _records(roster)))
    assert expected == (
        {"added": 1, "updated": 1, "removed": 3, "reactivated": 1, "unchanged": 6},
        [8],
        [6],
        [7],
        ["k07", "k08", "k09"],
    )
    upload = upload.with_columns(pl.Series("_same", _positions(kind), dtype=pl.UInt32))
    assert _summary(plan_entity("users", "bulk", upload, _records(roster))) == expected


def test_next_snapshot_is_made_part_by_part_with_entities_kept_together():
    """The old snapshot arrives in parts (an entity spanning parts, parts holding two
    entities); the new one has each entity's written records right after its old ones."""
    from rosterdrop.ingest.plan import Plan
    from rosterdrop.roster import store

    old = pl.concat(
        [
            pl.DataFrame({"entity": ["orgs"], "_key": ["o1"]}),
            _roster().with_columns(pl.lit("users").alias("entity")).select("entity", "_key"),
            pl.DataFrame({"entity": ["enrollments"], "_key": ["e1"]}),
        ]
    ).with_columns(
        _keyhash=key_hash(pl.col("_key")),
        _hash=pl.int_range(pl.len()),
        status=pl.lit("active"),
        _natural=pl.lit(None, pl.Int64),
        _rowid=pl.int_range(pl.len()) + 1000,
    )
    old = old.with_columns(
        status=pl.when(pl.col("_key") == "k10").then(pl.lit("tobedeleted")).otherwise("status")
    ).cast(store.SNAPSHOT_SCHEMA)
    upload = _upload()
    plan = Plan({"users": plan_entity("users", "bulk", upload, _records(_roster()))})
    batches = [old.slice(0, 4), old.slice(4, 5), old.slice(9, 4)]  # users span all three
    parts = [  # as hashes.Snapshot.parts gives them: each batch split by entity, in Arrow
        (entity, part.to_arrow().to_batches()[0])
        for batch in batches
        for (entity,), part in batch.partition_by("entity", as_dict=True).items()
    ]
    new = pl.concat(
        part if isinstance(part, pl.DataFrame) else pl.from_arrow(part).cast(store.SNAPSHOT_SCHEMA)
        for part in plan.applied_to(parts, {"users": upload})
    )
    assert new["entity"].is_sorted()
    users = new.filter(pl.col("entity") == "users")
    assert users["_key"].to_list() == [f"k{i:02d}" for i in (0, 1, 2, 3, 4, 5, 7, 8, 9, 6, 10, 11)]
    status = dict(zip(users["_key"], users["status"], strict=True))
    assert [k for k, s in status.items() if s == "tobedeleted"] == ["k07", "k08", "k09"]
    assert status["k10"] == "active"  # reactivated
    assert dict(zip(users["_key"], users["_hash"], strict=True))["k06"] == 66
    assert new.filter(pl.col("entity") != "users")["_key"].to_list() == ["o1", "e1"]
    # Row IDs: the kept and removed records' as they were, the updated and reactivated ones'
    # those of the roster's records they rewrite (k06: 106, k10: 110; _records' roster), the
    # new one's not known before apply.
    ids = dict(zip(users["_key"], users["_rowid"], strict=True))
    assert ids == {f"k{i:02d}": 1001 + i for i in (0, 1, 2, 3, 4, 5, 7, 8, 9)} | {
        "k06": 106,
        "k10": 110,
        "k11": None,
    }


def test_next_snapshot_leaves_a_renamed_records_old_id_tobedeleted():
    """A record sent under a new ID with the natural key of one the file left out is renamed:
    the next snapshot has its old ID tobedeleted where it was and the new one written."""
    from rosterdrop.ingest.plan import Plan
    from rosterdrop.roster import store

    roster = _roster().with_columns(_natural=pl.int_range(pl.len()).cast(pl.Int64) + 100)
    upload = _upload().with_columns(_natural=pl.int_range(pl.len()).cast(pl.Int64) + 100)
    # k11 arrives with k08's natural key (k07 and k09 stay removed).
    upload = upload.with_columns(
        _natural=pl.when(pl.col("_key") == "k11").then(108).otherwise("_natural")
    )
    ep = plan_entity("users", "bulk", upload, _records(roster))
    assert ep.renamed.select("_key", "_old_key").rows() == [("k11", "k08")]
    old = roster.with_columns(pl.lit("users").alias("entity"))
    old = old.select(list(store.SNAPSHOT_SCHEMA)).cast(store.SNAPSHOT_SCHEMA)
    parts = [("users", part.to_arrow().to_batches()[0]) for part in (old[:5], old[5:])]
    new = pl.concat(
        part if isinstance(part, pl.DataFrame) else pl.from_arrow(part).cast(store.SNAPSHOT_SCHEMA)
        for part in Plan({"users": ep}).applied_to(parts, {"users": upload})
    )
    status = dict(zip(new["_key"], new["status"], strict=True))
    assert new["_key"].to_list() == [f"k{i:02d}" for i in (0, 1, 2, 3, 4, 5, 7, 8, 9, 6, 10, 11)]
    assert [k for k, s in status.items() if s == "tobedeleted"] == ["k07", "k08", "k09"]
    # The renamed record keeps its row (k08's, 108) under its new ID; the row left under the
    # old ID is made by apply, its ID not known yet. What apply seeks by ID says the same.
    ids = dict(zip(new["_key"], new["_rowid"], strict=True))
    assert (ids["k11"], ids["k08"], ids["k07"], ids["k04"]) == (108, None, 107, None)
    assert ep.renamed.select("_old_key", "_rowid").rows() == [("k08", 108)]
    assert sorted(ep.removals.rows()) == [("k07", 107), ("k09", 109)]
    assert sorted(ep.rewritten_ids.rows()) == [(6, 106), (7, 110), (8, 108)]


@pytest.mark.parametrize("slice_rows", [500_000, 4, 2])
def test_places_in_the_rosters_order_are_confirmed_as_any_are(slice_rows, monkeypatch):
    """Matches naming a stretch of the roster in its order are compared with it in place
    (`_stretch`), not gathered: the same records confirmed, each only if it is the active
    record there with the same key hash and hash; a stretch off by one confirms none."""
    monkeypatch.setattr(plan, "CONFIRM_ROWS", slice_rows)
    roster = _roster().with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("tobedeleted"))
        .otherwise(pl.col("status"))
        .cast(STATUS)
        .alias("status")
    )
    sent = roster.select("_keyhash", "_hash").with_columns(
        roster["_hash"].scatter(5, -5),  # changed since
        pl.Series("_same", range(11), dtype=pl.UInt32),
    )
    same, kept = plan._confirmed_same(sent, roster.drop("_key"))
    expected = [i not in (3, 5, 10) for i in range(11)]  # 3 and 10 are not active
    assert same.to_list() == expected and kept.tolist() == expected
    off = sent.slice(1).with_columns(pl.Series("_same", range(10), dtype=pl.UInt32))
    same, kept = plan._confirmed_same(off, roster.drop("_key"))
    assert not same.any() and not kept.any()
    apart = sent[[0, 1, 2, 4, 6, 7]]  # in order, not one stretch: gathered
    same, kept = plan._confirmed_same(apart, roster.drop("_key"))
    assert same.to_list() == [True] * 6 and np.flatnonzero(kept).tolist() == [0, 1, 2, 4, 6, 7]
    swapped = sent[[0, 2, 1, 3]]  # as far apart as a stretch, not in order: gathered
    same, kept = plan._confirmed_same(swapped, roster.drop("_key"))
    assert same.to_list() == [True, True, True, False]
    assert np.flatnonzero(kept).tolist() == [0, 1, 2]


class _Spares:
    """What a full file keeps as it was (kept.Kept.spared): these keys."""

    def __init__(self, *keys: str):
        self._keys = set(keys)

    def spared(self, keys: pl.Series) -> np.ndarray:
        return np.array([k in self._keys for k in keys], dtype=bool)


def test_removals_spared_or_renamed_keep_each_key_with_its_own_row_id():
    """A plan's removals are keys and row IDs in one frame: those a full file spares (k08)
    and those paired with a new record as renamed (k07 -> k11) leave with their own IDs,
    and every other removal keeps its own (k04's not known)."""
    roster = _roster().with_columns(_natural=pl.int_range(pl.len()).cast(pl.Int64) + 100)
    upload = _upload().filter(pl.col("_key") != "k04")
    upload = upload.with_columns(
        _natural=pl.when(pl.col("_key") == "k11").then(107).otherwise(None).cast(pl.Int64)
    )
    ep = plan_entity("users", "bulk", upload, _records(roster), _Spares("k08"))
    assert ep.renamed.select("_key", "_old_key", "_rowid").rows() == [("k11", "k07", 107)]
    assert ep.kept.to_list() == ["k08"]
    assert sorted(ep.removals.rows()) == [("k04", None), ("k09", 109)]
    assert ep.removed.to_list() == ep.removals["_key"].to_list()


def test_row_ids_are_null_where_not_known():
    """RowIds keeps an unknown row ID as 0 (no row has ID 0) and gives it back as null,
    whether it was given as null or never given."""
    ids = plan.RowIds(5)
    ids.put(np.array([1, 3]), pl.Series([7, None], dtype=pl.Int64))
    ids.put(np.array([4]), None)  # not known
    ids.put(np.array([2]), np.array([9]))
    assert ids.of().to_list() == [None, 7, 9, None, None]
    assert ids.of(np.array([3, 1, 2])).to_list() == [None, 7, 9]
    assert ids.of().name == "_rowid" and ids.of().dtype == pl.Int64
