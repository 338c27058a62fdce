"""Finding 64-bit hashes among millions of others, in numpy.

The hashes are sorted once, and a table says where each bucket of their top bits starts: a
lookup is one gather into its bucket and a step or two inside it, where a binary search
halves its way across memory some 23 times (5M lookups among 5M: 0.42 s against 0.92 s for
np.searchsorted on sorted needles). Hashes spread evenly, so buckets stay small.
"""

import numpy as np
import polars as pl

# Hashes per bucket, on average: the table costs 4 bytes per bucket.
PER_BUCKET = 4


def sorting_order(values: np.ndarray) -> np.ndarray:
    """The positions that sort `values`: polars sorts on every core, numpy on one (5M 64-bit
    values: 0.27 s against 0.90 s)."""
    return pl.Series(values).arg_sort().to_numpy()


class HashIndex:
    """Sorted unsigned 64-bit hashes and the start of each top-bits bucket among them."""

    def __init__(self, hashes: np.ndarray, order: np.ndarray | None = None):
        """`hashes`: sorted, uint64; or in any order, with `order` the positions that sort
        them (no sorted copy is kept: a position found is then one in `hashes`)."""
        self.hashes, self.order = hashes, order
        ranked = hashes if order is None else hashes[order]
        bits = max((len(hashes) // PER_BUCKET).bit_length(), 1)
        self.shift = np.uint64(64 - bits)
        counts = np.bincount((ranked >> self.shift).astype(np.intp), minlength=1 << bits)
        # 32-bit: half the table (8 MB for 5M hashes), still room for 2**31 of them.
        self.starts = np.zeros((1 << bits) + 1, dtype=np.int32)
        np.cumsum(counts, out=self.starts[1:])

    def __len__(self) -> int:
        return len(self.hashes)

    def find(self, needles: np.ndarray) -> np.ndarray:
        """For each needle (uint64), the position of an equal hash, or -1."""
        bucket = (needles >> self.shift).astype(np.intp)
        at, end = self.starts[bucket], self.starts[bucket + 1]
        found = np.full(len(needles), -1, dtype=np.int64)
        looking = np.flatnonzero(at < end)
        while len(looking):
            here = at[looking]
            if self.order is not None:
                here = self.order[here]
            hit = self.hashes[here] == needles[looking]
            found[looking[hit]] = here[hit]
            at[looking] += 1
            looking = looking[~hit & (at[looking] < end[looking])]
        return found
