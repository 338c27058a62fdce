"""The plan is the same whether the spill's fingerprint matches (SAME) are right, wrong or
missing: they only spare it a join, they never decide what changed."""

import polars as pl
import pytest

from rosterdrop.ingest import plan
from rosterdrop.ingest.plan import plan_entity

STATUS = pl.Enum(["active", "tobedeleted"])


def _roster() -> pl.DataFrame:
    """k00..k09 active, k10 tobedeleted."""
    return pl.DataFrame(
        {
            "_key": [f"k{i:02d}" for i in range(11)],
            "_hash": list(range(11)),
            "status": pl.Series(["active"] * 10 + ["tobedeleted"], dtype=STATUS),
            "_natural": [None] * 11,
        },
        schema_overrides={"_natural": pl.Int64},
    )


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
    )


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
def test_fingerprint_matches_never_change_the_plan(kind, slice_rows, monkeypatch):
    # Matches are confirmed a slice at a time; slices of 2 records cut this upload into 5.
    monkeypatch.setattr(plan, "CONFIRM_ROWS", slice_rows)
    expected = _summary(plan_entity("users", "bulk", _upload(), _roster()))
    assert expected == (
        {"added": 1, "updated": 1, "removed": 3, "reactivated": 1, "unchanged": 6},
        [8],
        [6],
        [7],
        ["k07", "k08", "k09"],
    )
    upload = _upload().with_columns(pl.Series("_same", _positions(kind), dtype=pl.UInt32))
    assert _summary(plan_entity("users", "bulk", upload, _roster())) == expected
