"""The spill gives back every row it was given, once, in ascending key ranges, except the
records the roster already holds exactly as they are."""

import random
from pathlib import Path

import polars as pl
import pytest

from rosterdrop.ingest import spill as spill_module
from rosterdrop.ingest.columns import ROW
from rosterdrop.ingest.spill import Fingerprinting, Spill, fingerprints
from rosterdrop.roster.natural import key_hash
from rosterdrop.roster.schema import FIELDS


def _record(key: str) -> dict:
    """A user whose username is its key, with one extra column."""
    return {**dict.fromkeys(FIELDS["users"]), "username": key, "metadata": {"room": f"r-{key}"}}


def _batches(keys: list[str], size: int) -> list[pl.DataFrame]:
    return [
        pl.DataFrame(
            {
                "_key": keys[i : i + size],
                "_record": [_record(k) for k in keys[i : i + size]],
                "_hash": list(range(i, i + len(keys[i : i + size]))),
                "extra": ["not spilled"] * len(keys[i : i + size]),
            }
        ).with_columns(key_hash(pl.col("_key")).alias("_keyhash"))
        for i in range(0, len(keys), size)
    ]


def _read_back(spill: Spill) -> list[pl.DataFrame]:
    return [pl.from_arrow(table) for table in spill.ranges()]


@pytest.mark.parametrize("order", ["random", "sorted"])
def test_every_row_comes_back_once_in_key_ranges(tmp_path, order):
    rng = random.Random(7)
    keys = [f"{rng.getrandbits(40):010x}" for _ in range(5000)]
    if order == "sorted":
        keys.sort()  # the first batch then says nothing about the later keys
    spill = Spill(tmp_path, "users")
    for batch in _batches(keys, 700):
        spill.write(batch)
    spill.close()
    ranges = _read_back(spill)
    together = pl.concat(ranges)
    assert spill.rows == len(keys)
    assert together.columns == ["_key", *FIELDS["users"], "metadata", "_hash", ROW]
    assert sorted(together[ROW].to_list()) == list(range(len(keys)))
    by_row = dict(zip(together[ROW].to_list(), together["_key"].to_list(), strict=True))
    assert [by_row[i] for i in range(len(keys))] == keys
    assert together["username"].to_list() == together["_key"].to_list()
    assert together["givenName"].null_count() == together.height
    assert together["metadata"].to_list() == [f'{{"room":"r-{k}"}}' for k in together["_key"]]
    if order == "random":
        assert len(ranges) > 8
        for before, after in zip(ranges, ranges[1:], strict=False):
            assert before["_key"].max() <= after["_key"].min()


def test_a_range_too_large_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(spill_module, "MAX_RANGE_BYTES", 1)
    keys = [f"k{i:05d}" for i in range(3000)]
    spill = Spill(tmp_path, "users")
    for batch in _batches(keys, 1000):
        spill.write(batch)
    spill.close()
    ranges = _read_back(spill)
    assert max(r.height for r in ranges) <= 1000
    assert sorted(pl.concat(ranges)["_key"].to_list()) == keys


def test_nothing_spilled_gives_nothing_back(tmp_path):
    spill = Spill(tmp_path, "users")
    spill.write(_batches(["a"], 1)[0].clear())
    spill.close()
    assert spill.rows == 0
    assert _read_back(spill) == []


def test_records_the_roster_holds_as_they_are_are_not_spilled(tmp_path):
    """...and each row is told which roster record it matched, for the plan to confirm."""
    keys = [f"u{i:04d}" for i in range(100)]
    [batch] = _batches(keys, 100)
    in_roster = batch.head(60).with_columns(
        pl.when(pl.col("_key") == "u0007").then(-1).otherwise(pl.col("_hash")).alias("_hash")
    )  # u0007 changed since
    roster = pl.DataFrame(
        {
            "entity": pl.Series(["users"] * 60, dtype=pl.Enum(["orgs", "users"])),
            "_key": in_roster["_key"],
            "_keyhash": in_roster["_keyhash"],
            "_hash": in_roster["_hash"],
            "status": pl.Series(
                ["active"] * 59 + ["tobedeleted"], dtype=pl.Enum(["active", "tobedeleted"])
            ),
        }
    ).reverse()  # u0059, the one no longer active, first
    spill = Spill(tmp_path, "users", Fingerprinting(roster).pop("users"))
    same = spill.write(batch)
    spill.close()
    back = pl.concat(_read_back(spill))
    assert spill.rows == 100 and spill.spilled == back.height == 42
    assert sorted(back["_key"].to_list()) == ["u0007", *keys[59:]]
    assert sorted(back[ROW].to_list()) == [7, *range(59, 100)]
    matched = {keys[i]: p for i, p in enumerate(same.to_list()) if p is not None}
    assert len(matched) == 58
    assert all(roster["_key"][p] == key for key, p in matched.items())


def test_fingerprints_are_made_in_a_thread_entity_by_entity():
    """Each entity's active records' fingerprints, sorted, with their positions among the
    entity's records (32-bit); waited for by each spill; an error there is raised where asked."""
    roster = pl.DataFrame(
        {
            "entity": pl.Series(["orgs"] * 3 + ["users"] * 4, dtype=pl.Enum(["orgs", "users"])),
            "_keyhash": pl.Series(range(7), dtype=pl.UInt64),
            "_hash": list(range(10, 17)),
            "status": pl.Series(
                ["active"] * 5 + ["tobedeleted", "active"],
                dtype=pl.Enum(["active", "tobedeleted"]),
            ),
        }
    )
    made = Fingerprinting(roster)
    for entity, start, active in (("users", 3, [0, 1, 3]), ("orgs", 0, [0, 1, 2])):
        held = made.pop(entity)
        records = roster.slice(start, 4 if entity == "users" else 3)
        expected = sorted((int(f), p) for p, f in enumerate(fingerprints(records)) if p in active)
        pairs = zip(held.fingerprints.hashes.tolist(), held.positions.tolist(), strict=True)
        assert list(pairs) == expected
        # Held through the whole read: 12 bytes a record (and the buckets), not 16.
        assert held.fingerprints.hashes.nbytes + held.positions.nbytes == 12 * len(active)
    assert made.pop("users") is None  # handed over once
    broken = Fingerprinting(roster.drop("_hash"))
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        broken.pop("users")


@pytest.mark.parametrize("block", [None, 64, 37])
@pytest.mark.parametrize("order", ["roster", "moved", "random"])
def test_records_in_the_rosters_order_match_as_any_do(order, block, monkeypatch):
    """A file's kept lines are matched with the roster in their order, most of them found at
    the place after the one before (lookup.guessed): the same places as looked up one by one,
    with records changed, gone or not active since, and in any order; in one block or in
    blocks of `MATCH_ROWS` (`block`), the last one shorter."""
    if block is not None:
        monkeypatch.setattr(spill_module, "MATCH_ROWS", block)
    keys = [f"u{i:04d}" for i in range(600)]
    [batch] = _batches(keys, 600)
    roster = pl.DataFrame(
        {
            "entity": pl.Series(["users"] * 600, dtype=pl.Enum(["users"])),
            "_keyhash": batch["_keyhash"],
            "_hash": batch["_hash"].scatter([5, 300], [-1, -2]),  # changed since
            "status": pl.Series(
                ["active"] * 400 + ["tobedeleted"] + ["active"] * 199,
                dtype=pl.Enum(["active", "tobedeleted"]),
            ),
        }
    ).filter(pl.int_range(pl.len()) != 450)  # gone
    kept = batch.select("_keyhash", "_hash")
    if order == "moved":
        kept = pl.concat([kept[:100], kept[200:], kept[100:200], kept[7:9]])
    elif order == "random":
        kept = kept.sample(fraction=1.0, shuffle=True, seed=3)
    spill = Spill(Path("."), "users", Fingerprinting(roster).pop("users"))
    same = spill.match(kept, in_order=True)
    assert same is not None and same.equals(spill.match(kept))
    assert same.null_count() == 4  # 5, 300, 400 and 450
