"""Natural keys: the fields that name a record when its source ID changes (schema.NATURAL_KEYS).

Kept as one 64-bit hash per record, in the roster's snapshot, so that a record arriving under a
new ID can be paired with the one it replaces without reading that one's data.
"""

import polars as pl

SEED = 20261123
SEPARATOR = "\x1f"  # joins the fields, in memory and in the database's query alike


def natural_hash(values: list[pl.Expr]) -> pl.Expr:
    """The hash of a record's natural key fields (null fields as empty)."""
    return hash_joined(pl.concat_str([v.fill_null("") for v in values], separator=SEPARATOR))


def hash_joined(text: pl.Expr) -> pl.Expr:
    """The hash of natural key fields already joined with SEPARATOR."""
    return text.hash(SEED).reinterpret(signed=True)
