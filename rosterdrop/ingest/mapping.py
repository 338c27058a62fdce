"""Map: a validated batch of source rows -> canonical records of each entity the file feeds.

Each record carries its key (source ID), its canonical fields as JSON (`_data`, extra source
columns under "metadata"), a content hash of that JSON, its status and its source line.
"""

import polars as pl

from rosterdrop.formats.spec import FileSpec, Output
from rosterdrop.ingest.read import LINE
from rosterdrop.ingest.validate import STATUS
from rosterdrop.roster.schema import REFS

KEY, DATA, HASH = "_key", "_data", "_hash"
ITEM = "@item"
# Fixed, so that hashes stay comparable from one import to the next.
HASH_SEED = 20261122


def extra_columns(file: FileSpec, header: list[str]) -> list[str]:
    """Source columns the spec does not define (metadata.* and unknown): kept, never dropped."""
    return [h for h in header if file.column(h) is None]


def _value(source: str) -> pl.Expr:
    col = pl.col(ITEM) if source == ITEM else pl.col(source)
    return pl.when(col == "").then(None).otherwise(col)


def map_batch(
    file: FileSpec, output: Output, frame: pl.DataFrame, extras: list[str]
) -> pl.DataFrame:
    if output.explode:
        frame = (
            frame.with_columns(pl.col(output.explode).str.split(",").alias(ITEM))
            .explode(ITEM)
            .with_columns(pl.col(ITEM).str.strip_chars())
            .filter(pl.col(ITEM).is_not_null() & (pl.col(ITEM) != ""))
        )
    present = set(frame.columns)
    fields = {
        field: _value(source) if source in present or source == ITEM else pl.lit(None, pl.String)
        for field, source in output.fields.items()
    }
    fields.update({field: pl.lit(value) for field, value in output.constants.items()})
    if output.keep_extra and extras:
        fields["metadata"] = pl.struct(**{name: _value(name) for name in extras})
    key_parts = [pl.col(ITEM) if k == ITEM else pl.col(k) for k in output.key]
    refs = [r.field for r in REFS.get(output.entity, ()) if r.field in fields]
    return frame.select(
        pl.concat_str(key_parts, separator=":").alias(KEY),
        pl.struct(**fields).struct.json_encode().alias(DATA),
        pl.col(LINE),
        pl.col(STATUS),
        *(fields[f].fill_null("").alias(f) for f in refs),
    ).with_columns(pl.col(DATA).hash(HASH_SEED).reinterpret(signed=True).alias(HASH))


def source_column(output: Output, field: str) -> str:
    """The source column a canonical field came from, for messages."""
    source = output.fields.get(field, field)
    return output.explode if source == ITEM and output.explode else source
