"""Keys as hashes, kept in the roster's snapshot beside each record.

The natural key: the fields that name a record when its source ID changes (schema.NATURAL_KEYS),
so that a record arriving under a new ID can be paired with the one it replaces without reading
that one's data. The key hash: a 64-bit hash of the source ID itself, by which millions of
records are matched with the roster's without holding or comparing their ID strings.
"""

from typing import overload

import polars as pl

SEED = 20261123
KEY_SEED = 20261204
SEPARATOR = "\x1f"  # joins the fields, in memory and in the database's query alike


def natural_hash(values: list[pl.Expr]) -> pl.Expr:
    """The hash of a record's natural key fields (null fields as empty)."""
    return hash_joined(pl.concat_str([v.fill_null("") for v in values], separator=SEPARATOR))


def hash_joined(text: pl.Expr) -> pl.Expr:
    """The hash of natural key fields already joined with SEPARATOR."""
    return text.hash(SEED).reinterpret(signed=True)


@overload
def key_hash(keys: pl.Series) -> pl.Series: ...
@overload
def key_hash(keys: pl.Expr) -> pl.Expr: ...
def key_hash(keys: pl.Expr | pl.Series) -> pl.Expr | pl.Series:
    """The hash of a source ID (unsigned 64-bit)."""
    return keys.hash(KEY_SEED)
