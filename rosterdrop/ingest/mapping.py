"""Map: a validated batch of source rows -> canonical records of each entity the file feeds.

Each record carries its key (source ID), its canonical fields (`_record`: every field of the
entity in schema order, extra source columns under "metadata"), a content hash of them, its
status and its source line; a hash of its natural key, if the entity has one, is added for
the records that may be written (`natural_key`).
Fixed field order and nulls for what a format lacks mean the same record sent in two formats
hashes the same.
"""

from collections.abc import Iterable

import polars as pl

from rosterdrop.formats.spec import FileSpec, Joined, Output
from rosterdrop.ingest.columns import HASH, ITEM, KEY, KEYHASH, LINE, NATURAL, RECORD, STATUS
from rosterdrop.ingest.validate import has_control
from rosterdrop.roster.natural import key_hash, natural_hash
from rosterdrop.roster.schema import FIELDS, METADATA, NATURAL_KEYS, REFS
from rosterdrop.timing import timed

SOURCED_ID = "sourcedId"
# Fixed, so that hashes stay comparable from one import to the next.
HASH_SEED = 20261122


def extra_columns(file: FileSpec, header: list[str]) -> list[str]:
    """Source columns no output reads (metadata.*, unknown, defined but unmapped): kept.

    Secret columns (passwords), delta bookkeeping and columns whose name holds a control
    character are never kept.
    """
    used = set().union(*(o.sources() for o in file.outputs)) if file.outputs else set()
    extras = []
    for name in header:
        if has_control(name):
            continue
        col = file.column(name)
        if col is not None and (col.secret or col.delta_only or col.name in used):
            continue
        if col is not None and col.numbered and any(col.name in o.unpivot for o in file.outputs):
            continue
        # A column known by an alias has been renamed to the spec's name by then.
        extras.append(col.name if col is not None and not col.numbered else name)
    return extras


def _value(source: str) -> pl.Expr:
    col = pl.col(source)
    return pl.when(col == "").then(None).otherwise(col)


def _struct(fields: dict[str, pl.Expr]) -> pl.Expr:
    """A struct of named fields. Never `pl.struct(**fields)`: a source column named `schema`
    or `eager` (kept as metadata) would be taken for one of pl.struct's own arguments."""
    return pl.struct([expr.alias(name) for name, expr in fields.items()])


def _join_id(parts: list[pl.Expr]) -> pl.Expr:
    """Parts joined with ":" into one ID. Joined from several, an ID may carry free text such
    as a term's name, whose comma would split it wherever it is listed (termSourcedIds): each
    part then writes "," as %2C (and "%" as %25, so that two names never give one ID)."""
    if len(parts) > 1:
        parts = [
            p.str.replace_all("%", "%25", literal=True).str.replace_all(",", "%2C", literal=True)
            for p in parts
        ]
    return pl.concat_str(parts, separator=":")


def _joined(columns: tuple[str, ...], present: set[str]) -> pl.Expr:
    """Columns joined into an ID (empty or absent ones as ""): how keys are made."""
    return _join_id([pl.col(c) if c in present else pl.lit("") for c in columns])


def key_prefix(key: tuple[str, ...], present: set[str]) -> pl.Expr:
    """What every key made of `key`'s columns and more starts with ("u1:" of "u1:org1")."""
    return _joined((*key, ""), present)


def _source(source: str | tuple[str, ...] | Joined, present: set[str]) -> pl.Expr:
    """A field's value: one column, or several joined with ":" (null if any is empty)."""
    if isinstance(source, Joined):
        needed = [pl.col(c) != "" for c in source.needs if c in present]
        exists = pl.any_horizontal(needed) if needed else pl.lit(False)
        return pl.when(exists).then(_joined(source.columns, present)).otherwise(None)
    parts = (source,) if isinstance(source, str) else source
    if not all(p in present for p in parts):
        return pl.lit(None, pl.String)
    if len(parts) == 1:
        return _value(parts[0])
    return _join_id([_value(p) for p in parts])


def _rows(file: FileSpec, output: Output, frame: pl.DataFrame) -> pl.DataFrame:
    """The rows this output reads: filtered by `where`, one per item if it explodes/unpivots."""
    present = set(frame.columns)
    for name, filled in output.where.items():
        value = pl.col(name) != "" if name in present else pl.lit(False)
        frame = frame.filter(value if filled else ~value)
    if output.where_any:
        any_filled = [pl.col(c) != "" for c in output.where_any if c in present]
        frame = frame.filter(pl.any_horizontal(any_filled)) if any_filled else frame.clear()
    if output.explode:
        if output.explode not in present:  # an optional list column left out: no items
            return frame.clear().with_columns(pl.lit("").alias(ITEM))
        return (
            frame.with_columns(pl.col(output.explode).str.split(",").alias(ITEM))
            .explode(ITEM)
            .with_columns(pl.col(ITEM).str.strip_chars())
            .filter(pl.col(ITEM).is_not_null() & (pl.col(ITEM) != ""))
        )
    if output.unpivot:
        columns = [h for h in frame.columns if any(_is(file, u, h) for u in output.unpivot)]
        if not columns:
            return frame.clear().with_columns(pl.lit("").alias(ITEM))
        rest = [c for c in frame.columns if c not in columns]
        return (
            frame.unpivot(on=columns, index=rest, value_name=ITEM)
            .drop("variable")
            .filter(pl.col(ITEM) != "")
            .sort(LINE, maintain_order=True)
        )
    return frame


def _is(file: FileSpec, spec_name: str, header_name: str) -> bool:
    col = file.column(header_name)
    return col is not None and col.name == spec_name


@timed("map", batch=True)
def map_batch(
    file: FileSpec, output: Output, frame: pl.DataFrame, extras: list[str]
) -> pl.DataFrame:
    frame = _rows(file, output, frame)
    present = set(frame.columns)
    mapped = {f: _source(s, present) for f, s in output.fields.items()}
    for name, table in output.translate.items():
        mapped[name] = mapped[name].replace(table)
    mapped.update({f: pl.lit(v) for f, v in output.constants.items()})
    # Every field a string (or null): the same record hashes the same whatever its format.
    fields = {f: mapped.get(f, pl.lit(None)).cast(pl.String) for f in FIELDS[output.entity]}
    if output.keep_extra and extras:
        fields[METADATA] = _struct({name: _value(name) for name in extras})
    key = _joined(output.key, present)
    if output.key_space:
        key = pl.concat_str([pl.lit(f"{output.key_space}:"), key])
    refs = {
        r.field: key if r.field == SOURCED_ID else fields[r.field]
        for r in REFS.get(output.entity, ())
        if r.field in mapped or r.field == SOURCED_ID
    }
    return frame.select(
        key.alias(KEY),
        _struct(fields).alias(RECORD),
        pl.col(LINE),
        pl.col(STATUS),
        *(expr.fill_null("").alias(f) for f, expr in refs.items()),
    ).with_columns(
        pl.col(RECORD).hash(HASH_SEED).reinterpret(signed=True).alias(HASH),
        key_hash(pl.col(KEY)).alias(KEYHASH),
    )


def natural_key(output: Output) -> pl.Expr | None:
    """The hash of a mapped record's natural key (NATURAL), from its fields; None if the
    entity has none or the format does not give all its fields."""
    natural = NATURAL_KEYS.get(output.entity, ())
    given = set(output.fields) | set(output.constants)
    if not natural or not all(f in given for f in natural):
        return None
    return natural_hash([pl.col(RECORD).struct.field(f) for f in natural]).alias(NATURAL)


def stored_columns(entity: str, record: pl.Struct) -> list[pl.Expr]:
    """The stored form of a record (`record`: the schema of its RECORD struct): a column per
    canonical field, in schema order, and the extra columns as JSON text (null if none)."""
    fields = [pl.col(RECORD).struct.field(f) for f in FIELDS[entity]]
    if any(f.name == METADATA for f in record.fields):
        metadata = pl.col(RECORD).struct.field(METADATA).struct.json_encode()
    else:
        metadata = pl.lit(None, pl.String)
    return [*fields, metadata.alias(METADATA)]


def source_column(output: Output, field: str) -> str:
    """The source column a canonical field came from, for messages."""
    source = output.fields.get(field, field)
    if source == ITEM:
        return _item_column(output) or field
    if isinstance(source, Joined):
        return " + ".join(source.columns)
    return source if isinstance(source, str) else " + ".join(source)


def _item_column(output: Output) -> str:
    return output.explode or " / ".join(output.unpivot)


def key_columns(output: Output) -> tuple[str, ...]:
    """The source columns whose values make a record's key, as the district wrote them."""
    return tuple(_item_column(output) if k == ITEM else k for k in output.key)


def key_sources(file: FileSpec, output: Output, header: Iterable[str]) -> tuple[str, ...]:
    """The columns of `header` whose values make an output's keys (each a list's item)."""
    items = [
        h for h in header if h == output.explode or any(_is(file, u, h) for u in output.unpivot)
    ]
    return (*(k for k in output.key if k != ITEM), *(items if ITEM in output.key else ()))


def message_columns(output: Output) -> dict[str, str]:
    """Canonical field -> source column(s) as the district wrote them, for messages."""
    columns = {f: source_column(output, f) for f in output.fields}
    columns.setdefault(SOURCED_ID, " + ".join(key_columns(output)))
    return columns
