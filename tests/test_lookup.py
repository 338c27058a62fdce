"""HashIndex finds 64-bit hashes exactly, whatever their spread; `guessed` finds what it would."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rosterdrop.ingest import lines
from rosterdrop.ingest.columns import LINECHECK, LINEHASH
from rosterdrop.ingest.lookup import GUESS_STEP, HashIndex, grouping_order, guessed


def test_finds_every_present_hash_and_no_absent_one():
    rng = np.random.default_rng(5)
    hashes = np.sort(rng.integers(0, 2**64 - 1, 50_000, dtype=np.uint64))
    absent = rng.integers(0, 2**64 - 1, 5_000, dtype=np.uint64)
    absent = absent[~np.isin(absent, hashes)]
    needles = np.concatenate([hashes[::3], absent])
    found = HashIndex(hashes).find(needles)
    assert (hashes[found[: len(hashes[::3])]] == hashes[::3]).all()
    assert (found[len(hashes[::3]) :] == -1).all()


def test_crowded_buckets_and_repeated_hashes():
    """Hashes that all share their top bits (one bucket), some of them repeated."""
    hashes = np.sort(np.array([7, 7, 7, 9, 12, 12, 40, 2**20], dtype=np.uint64))
    found = HashIndex(hashes).find(np.array([12, 7, 8, 2**20, 0], dtype=np.uint64))
    assert list(hashes[found[[0, 1, 3]]]) == [12, 7, 2**20]
    assert list(found[[2, 4]]) == [-1, -1]


def test_nothing_to_find_in():
    assert list(HashIndex(np.array([], dtype=np.uint64)).find(np.array([1], np.uint64))) == [-1]


def test_unsorted_hashes_with_their_order():
    """Hashes kept in their own order (a file's lines), with the positions that sort them:
    what is found is a position among them as they are."""
    rng = np.random.default_rng(6)
    hashes = rng.integers(0, 2**64 - 1, 20_000, dtype=np.uint64)
    hashes[::7] = hashes[3]  # repeated
    absent = rng.integers(0, 2**64 - 1, 2_000, dtype=np.uint64)
    absent = absent[~np.isin(absent, hashes)]
    needles = np.concatenate([hashes[::5], absent])
    found = HashIndex(hashes, np.argsort(hashes, kind="stable")).find(needles)
    assert (hashes[found[: len(hashes[::5])]] == hashes[::5]).all()
    assert (found[len(hashes[::5]) :] == -1).all()


@pytest.mark.parametrize("size", [0, 1, 9, 5_000, pytest.param(400_000, marks=pytest.mark.slow)])
def test_hashes_grouped_by_bucket_are_found_as_sorted_ones_are(size):
    """An index of hashes in their own order grouped by bucket (lookup.grouping_order), not
    sorted, finds every hash there and none that is not, as the sorted one does: with
    repeated hashes, a crowded bucket and, at 400k hashes, bucket numbers past 16 bits (the
    second pass of the radix sort)."""
    rng = np.random.default_rng(size)
    hashes = rng.integers(0, 2**64 - 1, size, dtype=np.uint64)
    if size > 9:
        hashes[::11] = hashes[4]  # repeated
        hashes[1::13] = np.uint64(2**64 - 1) - np.arange(len(hashes[1::13]), dtype=np.uint64)
    order = grouping_order(hashes)
    index = HashIndex(hashes, order)
    assert sorted(order.tolist()) == list(range(size))
    buckets = hashes[order] >> index.shift
    assert (buckets[1:] >= buckets[:-1]).all()
    absent = rng.integers(0, 2**64 - 1, 3_000, dtype=np.uint64)
    absent = absent[~np.isin(absent, hashes)]
    needles = np.concatenate([hashes[::3], absent])
    found = index.find(needles)
    sorted_found = HashIndex(hashes, np.argsort(hashes, kind="stable")).find(needles)
    assert ((found >= 0) == (sorted_found >= 0)).all()
    assert (hashes[found[: len(hashes[::3])]] == hashes[::3]).all()
    assert (found[len(hashes[::3]) :] == -1).all()


# Edits of a sequence of values: what a night does to a file's lines (or to the roster's
# records beside the lines that wrote them).
EDITS = st.lists(
    st.tuples(st.sampled_from(["remove", "move", "repeat", "add"]), st.integers(0, 10**6)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 700),
    edits=EDITS,
    shuffled=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_guessed_places_are_where_a_lookup_finds_them(size, edits, shuffled, seed):
    """Whatever the order of the items against their places (the same, edited, or none at
    all), an item is found exactly when its value is among the places, and at a place with its
    value: a guess is only ever taken where it agrees."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**62, size, dtype=np.uint64)
    items = list(values)
    for edit, at in edits:
        if edit == "add" or not items:
            items.insert(at % (len(items) + 1), np.uint64(2**63 + at))  # no place has it
            continue
        i = at % len(items)
        if edit == "remove":
            del items[i]
        elif edit == "move":
            items.insert((at // 7) % len(items), items.pop(i))
        else:
            items.insert((at // 7) % len(items), items[i])
    needles = np.array(items, dtype=np.uint64)
    if shuffled:
        rng.shuffle(needles)
    index = HashIndex(values, np.argsort(values, kind="stable"))
    asked: list[int] = []

    def look_up(at: np.ndarray) -> np.ndarray:
        asked.extend(at.tolist())
        return index.find(needles[at])

    found = guessed(len(needles), size, look_up, lambda at, p: values[p] == needles[at])
    present = np.isin(needles, values)
    assert ((found >= 0) == present).all()
    assert (values[found[present]] == needles[present]).all()
    assert len(asked) == len(set(asked))  # none looked up twice
    if not edits and not shuffled and size > 2 * GUESS_STEP:
        assert len(asked) < size // 2  # in order, most places are guessed


class _Kept(lines._FoundByHash):
    """Kept lines as their two hashes only, in their order (lines.LastRead without a roster)."""

    def __init__(self, hashes: np.ndarray, checks: np.ndarray):
        self._hashes, self._checks = hashes, checks


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 600),
    edits=st.lists(
        st.tuples(st.sampled_from(["remove", "add", "change"]), st.integers(0, 10**6)), max_size=12
    ),
    order=st.sampled_from(["kept", "shuffled", "reversed", "one moved far"]),
    pieces=st.lists(st.integers(1, 200), min_size=1, max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_kept_lines_are_found_near_where_they_were_or_anywhere_if_the_file_moved(
    size, edits, order, pieces, seed
):
    """A file's pieces, one after the other, find their lines among the kept ones near where
    the last piece's ended (lines._FoundByHash), and among every kept line when many are not
    there but kept elsewhere (the file in another order). A place found always has both of
    the line's hashes; in order with lines added, removed and changed, every kept line is
    found, and in another order too where the pieces are small against the file (as 16 MB
    pieces of a nightly file are); a line moved far from its neighbours may be read anew."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lines, "NEAR_LINES", 2)  # pieces of a few lines: the near ones only
        _found_in_pieces(size, edits, order, pieces, seed)


def _found_in_pieces(
    size: int, edits: list[tuple[str, int]], order: str, pieces: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    kept = rng.integers(0, 2**62, (size, 2), dtype=np.uint64)
    sent = [tuple(pair) for pair in kept]
    for edit, at in edits:
        i = at % (len(sent) + 1)
        new = (np.uint64(2**63 + at), np.uint64(at))  # no kept line has it
        if edit == "add" or i == len(sent):
            sent.insert(i, new)
        elif edit == "remove":
            del sent[i]
        else:
            sent[i] = (sent[i][0], np.uint64(2**63 + at))  # its second hash only
    if order == "shuffled":
        rng.shuffle(sent)
    elif order == "reversed":
        sent.reverse()
    elif order == "one moved far" and len(sent) > 2:
        sent.append(sent.pop(0))
    lines_sent = np.array(sent, dtype=np.uint64).reshape(-1, 2)
    finder, found, start = _Kept(kept[:, 0].copy(), kept[:, 1].copy()), [], 0
    while start < len(lines_sent):
        piece = lines_sent[start : start + pieces[len(found) % len(pieces)]]
        hashes = pl.DataFrame({LINEHASH: piece[:, 0], LINECHECK: piece[:, 1]})
        found.append(finder.find(hashes).fill_null(-1).to_numpy())
        start += len(piece)
    places = np.concatenate([np.zeros(0, dtype=np.int64), *found])
    hit = places >= 0
    assert (kept[places[hit]] == lines_sent[hit]).all()
    every = set(map(tuple, kept.tolist()))
    present = np.array([tuple(pair) in every for pair in lines_sent.tolist()], dtype=bool)
    assert not (hit & ~present).any()
    if order == "kept":
        assert (hit == present).all()
    elif order != "one moved far" and all(n <= size // 8 for n in pieces):
        assert (hit == present).all()  # in another order, mostly not near: looked up anywhere
