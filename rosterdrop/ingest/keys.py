"""Validate across rows and files: unique source IDs, and every reference resolving.

Runs on canonical records, entity by entity in dependency order, so that a record skipped
for its own problem also breaks the references to it ("the class was skipped, see line N").
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from rosterdrop.ingest.columns import (
    DERIVED,
    FILE,
    HASH,
    KEY,
    KEYHASH,
    LINE,
    NATURAL,
    RECORD,
    ROW,
    SAME,
    STATUS,
)
from rosterdrop.ingest.findings import ERROR, WARNING, Finding, FindingLog
from rosterdrop.ingest.kept import Kept
from rosterdrop.roster.models import ENTITIES
from rosterdrop.roster.schema import LABELS, REFS, Ref
from rosterdrop.timing import timed

SAMPLES = 100
# The keys of the roster's records of an entity at given positions (hashes.Snapshot.keys).
RosterKeys = Callable[[str, np.ndarray], pl.Series]
# The rows naming records of an entity nothing holds: their records, rows, values, reference.
Unsent = tuple["EntityRows", pl.DataFrame, pl.Series, Ref]
# Entities that records refer to.
TARGETS = {ref.target for refs in REFS.values() for ref in refs}


@dataclass
class EntityRows:
    """All records of one entity in this upload, without their data (that is spilled)."""

    entity: str
    mode: str
    frames: list[pl.DataFrame] = field(default_factory=list)
    # file -> canonical field -> source column, for messages
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    rows: int = 0
    # Records made from list items of another file's rows: their duplicates echo that file's.
    derived: bool = False
    # file -> the (key space, key columns) of each output feeding this entity, for messages
    keys: dict[str, list[tuple[str, tuple[str, ...]]]] = field(default_factory=dict)
    # The keys of rows the row checks skipped (_key, _file, _line): what a reference to them
    # is told.
    skipped: list[pl.DataFrame] = field(default_factory=list)
    # The roster's records that rows skipped here keep as they were (full files only).
    kept: Kept = field(default_factory=Kept)
    # Where a delta's tobedeleted rows are (_row, _key, _file, _line), kept by `release`: the
    # plan's report names those that name no record of the roster.
    deletions: pl.DataFrame = field(default_factory=pl.DataFrame)
    # Whether the row checks refused a row that maps to a record the roster holds as it is:
    # the roster cannot vouch for the entity (ingest/vouched.py `carried`).
    refused_held: bool = False

    @property
    def matched_keys(self) -> bool:
        """Whether records the spill matched with the roster (SAME) keep their key strings:
        only where other records refer to this entity. Elsewhere their keys are the roster's
        (5M enrollments: about 180 MB less), read back from the snapshot should they be needed.
        """
        return self.entity in TARGETS

    @timed("keep keys", batch=True)
    def add(self, frame: pl.DataFrame, file: str, derived: bool = False) -> None:
        """`derived`: these records repeat by design (one per list item or repeated row)."""
        # References repeat a few thousand values millions of times: keep them categorical.
        refs = [c for c in frame.columns if not c.startswith("_")]
        if not self.matched_keys and SAME in frame.columns:
            # concat_str copies the keys left, so that the batch's key buffer can go. A delta's
            # tobedeleted rows keep theirs: the plan finds the records they remove by key.
            matched = pl.col(SAME).is_not_null() & (pl.col(STATUS) == "active")
            kept = pl.when(~matched).then(pl.col(KEY))
            frame = frame.with_columns(pl.concat_str([kept, pl.lit("")]).alias(KEY))
        self.frames.append(
            frame.drop(RECORD, strict=False).with_columns(
                pl.col([*refs, STATUS]).cast(pl.Categorical),
                pl.int_range(self.rows, self.rows + frame.height, dtype=pl.UInt32).alias(ROW),
                pl.lit(file).cast(pl.Categorical).alias(FILE),
                pl.lit(derived or self.derived).alias(DERIVED),
            )
        )
        self.rows += frame.height

    def add_skipped(self, frame: pl.DataFrame, file: str) -> None:
        """Keys of rows skipped for their own errors (KEY, LINE)."""
        if frame.height:
            self.skipped.append(
                frame.select(KEY, pl.lit(file).alias(FILE), pl.col(LINE).cast(pl.UInt32))
            )

    def shown(self, file: str, key: str) -> tuple[str, str]:
        """A key as the district wrote it, as a value ("ST2 + 2") and in words ("Staff ID
        'ST2' and School ID '2'"): without the key space and joins that make it one ID."""
        for space, columns in sorted(self.keys.get(file, ()), key=lambda k: not k[0]):
            rest = key.removeprefix(f"{space}:") if space else key
            if space and rest == key:
                continue
            parts = rest.split(":", len(columns) - 1)
            if len(parts) != len(columns):
                continue
            if len(parts) > 1:
                parts = [p.replace("%2C", ",").replace("%25", "%") for p in parts]
                words = " and ".join(f"{c} {p!r}" for c, p in zip(columns, parts, strict=True))
                return " + ".join(parts), words
            return rest, f"ID {rest!r}"
        return key, f"ID {key!r}"

    def column(self, file: str, name: str) -> str:
        """The source column a field came from in `file`, as the district wrote it."""
        return self.columns.get(file, {}).get(name, name)

    def release(self) -> None:
        """Let the records go once checked (what the plan needs is in `accepted`), but for
        where the tobedeleted rows are: few, and only in a delta."""
        if self.frames and self.mode != "bulk":
            deleted = self.frame().filter(pl.col(STATUS) == "tobedeleted")
            self.deletions = deleted.select(ROW, KEY, FILE, LINE)
        self.frames.clear()

    def frame(self) -> pl.DataFrame:
        if not self.frames:
            return pl.DataFrame(
                schema={
                    KEY: pl.String,
                    KEYHASH: pl.UInt64,
                    HASH: pl.Int64,
                    LINE: pl.UInt32,
                    STATUS: pl.String,
                    ROW: pl.UInt32,
                    FILE: pl.Categorical,
                    DERIVED: pl.Boolean,
                }
            )
        # Kept as one frame from now on, so the batches are not held twice. Batches of one
        # shape are chained as they are (no copy); files of different shapes are aligned.
        same_shape = all(f.schema == self.frames[0].schema for f in self.frames)
        how: Literal["vertical", "diagonal_relaxed"] = (
            "vertical" if same_shape else "diagonal_relaxed"
        )
        self.frames = [pl.concat(self.frames, how=how, rechunk=False)]
        return self.frames[0]


@timed("check_keys")
def check_keys(
    entities: dict[str, EntityRows],
    known: Mapping[str, pl.Series],
    log: FindingLog,
    refs: dict[str, tuple[Ref, ...]] | None = None,
    roster_keys: RosterKeys | None = None,
    how_to_send: Callable[[str], str] | None = None,
) -> dict[str, pl.DataFrame]:
    """Accepted records per entity (_key, _keyhash, _hash, _status, _row [, _natural, _same]);
    findings for the rest.

    `known` holds the active keys of the current roster, used for references into entities
    this upload does not send in full. `refs`: the format's references (default: the schema's).
    `roster_keys`: the roster's keys by position, for records that let theirs go.
    `how_to_send`: what to do about an entity that rows name but that neither the upload nor
    the roster holds (the format's words); its rows then get one issue, not one each.
    """
    refs = REFS if refs is None else refs
    # Source lines whose record was skipped and reported: their other records stay quiet.
    reported = pl.DataFrame(schema={FILE: pl.String, LINE: pl.UInt32})
    # Per entity, the keys of records skipped for a problem of their own, and where they were:
    # a reference to one of them names that row, the cause (_key, _file, _line).
    lost: dict[str, pl.DataFrame] = {}
    accepted: dict[str, pl.DataFrame] = {}
    active_keys: dict[str, pl.Series] = {}
    empty = pl.Series(KEY, [], pl.String)
    # Each entity's active keys as the references to it compare them, made once for all.
    compared: dict[tuple[str, bool], pl.Series] = {}
    targeted = {ref.target for entity_refs in refs.values() for ref in entity_refs}
    # Targets neither sent nor in the roster -> the references to them, told once.
    unsent: dict[str, list[Unsent]] = {}
    for entity in ENTITIES:
        rows = entities.get(entity)
        if rows is None:
            if entity in targeted:  # asked only when needed: `known` may read from disk
                active_keys[entity] = known.get(entity, empty)
                if how_to_send is not None and not len(active_keys[entity]):
                    unsent[entity] = []
            continue
        # A delta or partial upload may refer to records already in the roster; a full one to
        # those its skipped rows keep as they were.
        if rows.mode != "bulk":
            carried = known.get(entity, empty)
        else:  # every entity a record refers to within its own is a target
            carried = _kept(rows, known) if entity in targeted else empty
        whole = rows.frame()
        checks = [
            (ref, _targets(ref, entity, whole, carried, active_keys, compared))
            for ref in refs.get(entity, ())
            if ref.field in whole.columns
        ]
        frame = _drop_duplicates(rows, log, checks, roster_keys)
        live = frame[STATUS] == "active"
        keep = pl.repeat(True, frame.height, eager=True)
        quiet = _on_lines(frame, reported)
        for ref, targets in checks:
            missing, values = _missing(frame, ref.field, ref.many, targets)
            missing = missing & live
            if missing.any():
                if ref.target in unsent:
                    unsent[ref.target].append(
                        (rows, frame.filter(missing), values.filter(missing), ref)
                    )
                else:
                    causes = lost.get(ref.target, LOST)
                    _report_missing(rows, frame, missing & ~quiet, values, ref, log, causes)
                if ref.strong:
                    keep = keep & ~missing
        skipped = frame.filter(~keep).select(pl.col(KEY).cast(pl.String), FILE, LINE)
        reported = pl.concat([reported, skipped.select(pl.col(FILE).cast(pl.String), LINE)])
        lost[entity] = pl.concat(
            [f.cast(LOST.schema) for f in (*rows.skipped, skipped)], how="vertical"
        )
        if rows.mode == "bulk" and not keep.all():
            _keep_skipped(rows, frame.filter(~keep), roster_keys)
            if entity in targeted:
                carried = _kept(rows, known)
        kept = frame if keep.all() else frame.filter(keep)
        extra = [c for c in (NATURAL, SAME) if c in kept.columns]
        accepted[entity] = kept.select(KEY, KEYHASH, HASH, STATUS, ROW, *extra)
        if entity in targeted:
            active_keys[entity] = pl.concat([kept.filter(pl.col(STATUS) == "active")[KEY], carried])
    for target, named in unsent.items():
        if named and how_to_send is not None:  # only then is anything unsent
            log.add(_unsent(target, named, how_to_send(target)))
    return accepted


def _unsent(target: str, named: list[Unsent], advice: str) -> Finding:
    """One issue for all the rows naming records of an entity that nothing holds (a custom
    district sending students but no schools): what is missing and how to fix it."""
    label = LABELS[target]
    first = None
    lines: list[pl.DataFrame] = []
    values: dict[str, None] = {}
    places: dict[str, None] = {}
    outcomes: dict[str, None] = {}
    for rows, frame, value_of, ref in named:
        found = frame.select(LINE, pl.col(FILE).cast(pl.String))
        lines.append(found)
        if first is None:
            first = (found[FILE][0], found[LINE][0], rows.column(found[FILE][0], ref.field))
        at = value_of.filter(value_of != "").cast(pl.String).unique(maintain_order=True)
        values.update(dict.fromkeys(at.head(5).to_list()))
        for file in found[FILE].unique(maintain_order=True):
            places[f"{file} ({rows.column(file, ref.field)})"] = None
        what = LABELS[rows.entity]
        outcomes[
            f"their {what}s were skipped"
            if ref.strong
            else f"their {what}s were imported without it"
        ] = None
    rows_of = pl.concat(lines).unique().height  # a row may name it in several records
    shown = ", ".join(list(values)[:5]) + (", ..." if len(values) > 5 else "")
    strong = any(ref.strong for *_, ref in named)
    assert first is not None  # `named` is never empty
    return Finding(
        ERROR if strong else WARNING,
        "reference_not_sent",
        f"No file of this upload holds any {label}, and the roster has none yet, but "
        f"{rows_of} rows name one in {', '.join(places)}: {shown}. "
        f"{'; '.join(outcomes).capitalize()}. {advice}",
        first[0],
        first[1],
        first[2],
        shown,
    )


LOST = pl.DataFrame(schema={KEY: pl.String, FILE: pl.String, LINE: pl.UInt32})


def _kept(rows: EntityRows, known: Mapping[str, pl.Series]) -> pl.Series:
    """The roster's active records of a full file's entity that its skipped or unreadable rows
    keep: still in the roster, so references to them resolve (`known` may read from disk: asked
    only for a row skipped or unread)."""
    if rows.kept.unread:  # its file removes nothing: every active record stays
        return known.get(rows.entity, pl.Series(KEY, [], pl.String))
    keys = rows.kept.keys()
    if not len(keys):
        return keys
    return keys.filter(keys.is_in(known.get(rows.entity, keys.clear()).implode())).unique()


def _keep_skipped(rows: EntityRows, skipped: pl.DataFrame, roster_keys: RosterKeys | None) -> None:
    """Records of a full file skipped for a broken reference keep what the roster holds."""
    keys = _keys_of(rows.entity, skipped, roster_keys)
    rows.kept.add(skipped.select(pl.Series(KEY, keys), LINE, FILE))


def _targets(
    ref: Ref,
    entity: str,
    frame: pl.DataFrame,
    carried: pl.Series,
    active: dict[str, pl.Series],
    compared: dict[tuple[str, bool], pl.Series],
) -> pl.Series:
    """The keys a reference may name (the entity's own live ones, or the target's) as
    `_missing` compares them. Another entity's are made once (`compared`), for every reference
    to it: users are named by roles, demographics, agents and enrollments, and casting their
    530k keys to categories cost ~0.05 s of CPU each time at `huge`."""
    if ref.target == entity:
        return _compared(pl.concat([frame.filter(pl.col(STATUS) == "active")[KEY], carried]), ref)
    if (ref.target, ref.many) not in compared:
        compared[ref.target, ref.many] = _compared(active[ref.target], ref)
    return compared[ref.target, ref.many]


def _compared(keys: pl.Series, ref: Ref) -> pl.Series:
    """Keys as one list item: categories for a single reference, whose values are compared as
    categories (no string is materialised for millions of rows); strings for a list's items."""
    return (keys if ref.many else keys.cast(pl.Categorical)).implode()


def _unresolved(frame: pl.DataFrame, checks: list[tuple[Ref, pl.Series]]) -> pl.Series:
    """Live rows with a strong reference that names nothing: rows that would be skipped."""
    broken = pl.repeat(False, frame.height, eager=True)
    for ref, targets in checks:
        if ref.strong:
            broken = broken | _missing(frame, ref.field, ref.many, targets)[0]
    return broken & (frame[STATUS] == "active")


def _on_lines(frame: pl.DataFrame, lines: pl.DataFrame) -> pl.Series:
    """Which records come from one of these source lines (file, line): one issue per row."""
    if lines.is_empty():
        return pl.repeat(False, frame.height, eager=True)
    marks = lines.unique().with_columns(pl.lit(True).alias("_seen"))
    return (
        frame.select(pl.col(FILE).cast(pl.String), LINE)
        .join(marks, on=[FILE, LINE], how="left", maintain_order="left")["_seen"]
        .fill_null(False)
    )


def _missing(
    frame: pl.DataFrame, field: str, many: bool, targets: pl.Series
) -> tuple[pl.Series, pl.Series]:
    """Rows whose reference (or any item of a list) is not among `targets` (`_compared`), and
    that value."""
    if not many:
        values = frame[field]
        return (values != "") & ~values.is_in(targets), values
    items = (
        frame.select(ROW, pl.col(field).cast(pl.String).str.split(","))
        .explode(field)
        .filter(pl.col(field) != "")
        .filter(~pl.col(field).is_in(targets))
        .group_by(ROW)
        .agg(pl.col(field).first().alias("_value"))
    )
    values = (
        frame.select(ROW)
        .join(items, on=ROW, how="left", maintain_order="left")["_value"]
        .fill_null("")
    )
    return values != "", values


def _drop_duplicates(
    rows: EntityRows,
    log: FindingLog,
    checks: list[tuple[Ref, pl.Series]],
    roster_keys: RosterKeys | None,
) -> pl.DataFrame:
    """One row per key: the first, or for a record repeated by design (one row per child of
    a parent...) the first whose references resolve, so that one row naming a student who is
    not loaded does not lose the parent. `checks`: the entity's references and their targets.
    """
    frame = rows.frame()
    # Equal keys have equal hashes: with no repeated hash there is no repeated key, and
    # comparing 64-bit numbers is much faster than comparing millions of strings. Only the
    # records of a repeated hash are compared by key.
    hashes = frame[KEYHASH].sort()  # a sorted copy: 8 bytes a record, not a hash table
    if len(hashes) < 2 or not (hashes.slice(1) == hashes.slice(0, len(hashes) - 1)).any():
        return frame
    del hashes
    repeated = frame[KEYHASH].is_duplicated()
    at = np.flatnonzero(repeated.to_numpy())
    among = frame[at].with_columns(_keys_of(rows.entity, frame[at], roster_keys))
    dupes = ~among[KEY].is_first_distinct()
    if not dupes.any():
        return frame
    if (dupes & among[DERIVED]).any():
        broken = _unresolved(among, checks) & among[DERIVED]
        if broken.any():
            # Broken rows move behind the others (a stable sort); the first row left per key
            # is kept.
            order = among.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_at"), KEY)
            order = order.with_columns(broken.alias("_broken")).sort("_broken", maintain_order=True)
            kept = order.filter(pl.col(KEY).is_first_distinct())["_at"].to_numpy()
            keeper = np.zeros(among.height, dtype=bool)
            keeper[kept] = True
            dupes = ~pl.Series(keeper)
    reported = dupes & ~among[DERIVED]
    total = int(reported.sum())
    if total:
        first = among.with_columns(
            pl.col(LINE).first().over(KEY).alias("_first_line"),
            pl.col(FILE).cast(pl.String).first().over(KEY).alias("_first_file"),
        )
        sample = first.filter(reported).head(SAMPLES)
        rows_of = sample.select(KEY, LINE, FILE, "_first_line", "_first_file").iter_rows()
        log.add_counted([_duplicate(rows, *row) for row in rows_of], total)
    dropped = np.zeros(frame.height, dtype=bool)
    dropped[at[dupes.to_numpy()]] = True
    return frame.filter(~pl.Series(dropped))


def _duplicate(
    rows: EntityRows, key: str, line: int, file: str, first_line: int, first_file: str
) -> Finding:
    """A repeated record, naming both rows (file and line) by the values the district wrote."""
    file = str(file)
    value, words = rows.shown(file, key)
    column = rows.column(file, "sourcedId")
    label = LABELS[rows.entity]
    composite = " + " in column
    what = f"of {words}" if composite else words
    return Finding(
        ERROR,
        "duplicate_id",
        f"The {label} {what} on {file} line {line} was already "
        f"{'given' if composite else 'used'} on {first_file} line {first_line}; this row was "
        f"skipped. Each {label if composite else 'ID'} must appear once.",
        file,
        line,
        column,
        value,
        outcome="this row was skipped",
    )


def _keys_of(entity: str, frame: pl.DataFrame, roster_keys: RosterKeys | None) -> pl.Series:
    """The records' keys, the roster's for those that let theirs go (EntityRows.matched_keys)."""
    keys = frame[KEY]
    missing = np.flatnonzero(keys.is_null().to_numpy())
    if not len(missing):
        return keys
    if roster_keys is None:
        raise RuntimeError(f"{entity} records matched with a roster that is not at hand")
    found = roster_keys(entity, frame[SAME].gather(missing).to_numpy())
    return keys.scatter(missing, found)


def _report_missing(
    rows: EntityRows,
    frame: pl.DataFrame,
    missing: pl.Series,
    values: pl.Series,
    ref: Ref,
    log: FindingLog,
    causes: pl.DataFrame,
) -> None:
    """Broken references: to a record that was skipped for its own problem (reference_skipped,
    naming its row), or to one that is nowhere (reference_missing)."""
    target = LABELS[ref.target]
    consequence = (
        f"this {LABELS[rows.entity]} was skipped" if ref.strong else "it was imported without it"
    )
    if ref.why:
        consequence += f" ({ref.why})"
    found = frame.with_columns(values.cast(pl.String).alias("_value")).filter(missing)
    causes = causes.unique(KEY, keep="first", maintain_order=True).rename(
        {KEY: "_value", FILE: "_cause_file", LINE: "_cause_line"}
    )
    found = found.join(causes, on="_value", how="left", maintain_order="left")
    for code, kind in (
        ("reference_skipped", pl.col("_cause_line").is_not_null()),
        ("reference_missing", pl.col("_cause_line").is_null()),
    ):
        of_kind = found.filter(kind)
        sample = of_kind.head(SAMPLES).select("_value", LINE, FILE, "_cause_file", "_cause_line")
        log.add_counted(
            [
                _broken(
                    rows,
                    code,
                    target,
                    consequence,
                    *row,
                    severity=ERROR if ref.strong else WARNING,
                    field=ref.field,
                )
                for row in sample.iter_rows()
            ],
            of_kind.height,
        )


def _broken(
    rows: EntityRows,
    code: str,
    target: str,
    consequence: str,
    value: str,
    line: int,
    file: str,
    cause_file: str | None,
    cause_line: int | None,
    *,
    severity: str,
    field: str,
) -> Finding:
    column = rows.column(str(file), field)
    if cause_line is None:
        what = (
            f"{column} {value!r} on line {line} does not match any {target} that was imported; "
            f"{consequence}. Check that the {target} is in its file and valid."
        )
    else:
        what = (
            f"{column} {value!r} on line {line} names the {target} on {cause_file} line "
            f"{cause_line}, which was skipped for its own problem (see that line); "
            f"{consequence}."
        )
    return Finding(severity, code, what, str(file), line, column, value, outcome=consequence)
