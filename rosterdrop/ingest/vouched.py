"""Rows the roster vouches for: a row whose record the roster holds exactly is not checked again.

Every active record of an entity was checked, row by row, by the imports that wrote it. If
they all read their files the same way as this import does (the same rosterdrop, district
settings and format spec: the *context*), a row of this upload that maps to exactly such a
record (same key and content hash, found by the spill's fingerprints) passed the same checks
with the same values, and would again: only the other rows are checked. On a nightly export
of 5M enrollments that is most of the checking time.

That holds only where a row's checks depend on nothing but its own values, and every value
checked reaches the record (`vouchable`). Which entities the roster vouches for, and under
which context, is kept with its snapshot (roster/hashes.py) and carried from sync to sync
(`carried`). A snapshot rebuilt from the database vouches for nothing.
"""

import hashlib
from importlib.metadata import version

from rosterdrop.formats.spec import FileSpec, FormatSpec, Mode


def context(district_id: int, fallback_encoding: str, spec: FormatSpec | None) -> str:
    """sha256 of what decides how a row is checked and mapped: this rosterdrop, the
    district's fallback encoding and the format spec the import reads with (engine.Settings)."""
    digest = hashlib.sha256()
    for part in (version("rosterdrop"), str(district_id), fallback_encoding, repr(spec)):
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()


def vouchable(
    fmt: FormatSpec, file: FileSpec, mode: Mode, checked: list[str], extras: list[str]
) -> bool:
    """Whether a record can vouch for the row it came from: a full (bulk) file feeding one
    entity, one record per row, whose checked columns (`checked`, by spec name) all reach the
    record, and where no check compares one row with another (unique values, links) nor
    looks at several columns together (row rules)."""
    if mode != Mode.BULK or len(file.outputs) != 1 or file.unique or file.row_rules:
        return False
    if any(f.links for f in fmt.files):
        return False
    output = file.outputs[0]
    if output.derived or output.where or output.where_any:
        return False
    reaching = output.sources() | (set(extras) if output.keep_extra else set())
    return all(name in reaching for name in checked)


def carried(
    earlier: dict[str, str], modes: dict[str, str], now: str, refused: frozenset[str] = frozenset()
) -> dict[str, str]:
    """What the roster vouches for once this sync is applied: an entity sent in full is now
    all of this context; one sent in part keeps its context only if it is this one; others
    stay as they were. `modes`: the mode of each entity sent. `refused`: entities a row of
    which the checks refused although it maps to a record the roster holds as it is (a rule
    new since the record was written; `EntityRows.refused_held`): the record stays as it was
    (ingest/kept.py), and the next read would take that row for it unchecked, so the roster
    vouches for none of the entity until no such row is sent."""
    vouched = dict(earlier)
    for entity, mode in modes.items():
        same = mode == Mode.BULK or earlier.get(entity) == now
        vouched[entity] = now if same and entity not in refused else ""
    return vouched
