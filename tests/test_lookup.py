"""HashIndex finds 64-bit hashes exactly, whatever their spread."""

import numpy as np

from rosterdrop.ingest.lookup import HashIndex


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
