"""Kept as it was: the roster's records that a full file would remove but did not validly leave out.

A record leaves the roster only when a valid file no longer lists it (docs/DESIGN.md, principle 3).
A row of a full file skipped for an error keeps the record the roster holds for its ID, and the
records made from it (a user's roles, from its list of schools); a line that could not be read
at all, or a row whose own ID could not be read, might be any record, so its file removes
nothing. The plan leaves these records as they are; the sync says which, and why.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from rosterdrop.ingest.columns import FILE, KEY, LINE
from rosterdrop.ingest.findings import UNREADABLE, WARNING, Finding
from rosterdrop.roster.schema import LABELS

PREFIX = "_prefix"
SAMPLES = 100
# Where the key of a row that made a derived record may end in the record's key ("u1:org1"):
# at its first ":" or at its last (either the row's key or the item may hold a ":").
STARTS = (r"^([^:]*:)", r"^(.*:)")
# Records that skipped rows keep: the key, or with PREFIX every key that starts with it.
SCHEMA = {KEY: pl.String, LINE: pl.UInt32, FILE: pl.String, PREFIX: pl.Boolean}


@dataclass
class Kept:
    """What one entity's full files keep as it was, whatever they leave out."""

    parts: list[pl.DataFrame] = field(default_factory=list)
    # The first line, per file, that could not be read: then nothing is removed.
    unread: dict[str, int] = field(default_factory=dict)

    def add(self, keys: pl.DataFrame, file: str = "", prefix: bool = False) -> None:
        """`keys`: _key, _line [, _file] of skipped rows (`file` if they have no _file);
        with `prefix`, keys that other keys start with. Empty keys name nothing."""
        source = pl.col(FILE).cast(pl.String) if FILE in keys.columns else pl.lit(file)
        keys = keys.select(
            pl.col(KEY).cast(pl.String),
            pl.col(LINE).cast(pl.UInt32),
            source.alias(FILE),
            pl.lit(prefix).alias(PREFIX),
        )
        self.parts.append(keys.filter(pl.col(KEY) != ""))

    @property
    def rows(self) -> pl.DataFrame:
        """Every record kept so far (SCHEMA): the parts, joined once."""
        if len(self.parts) != 1:
            self.parts = [pl.concat([pl.DataFrame(schema=SCHEMA), *self.parts])]
        return self.parts[0]

    def keys(self) -> pl.Series:
        """The exact keys kept."""
        return self.rows.filter(~pl.col(PREFIX))[KEY]

    def spared(self, keys: pl.Series) -> np.ndarray:
        """Which of the records that would be removed (`keys`) stay as they are."""
        if self.unread:
            return np.ones(len(keys), dtype=bool)
        if self.rows.is_empty() or not len(keys):
            return np.zeros(len(keys), dtype=bool)
        found = keys.is_in(self.keys().implode())
        prefixes = self.rows.filter(PREFIX)[KEY].implode()
        for start in STARTS if len(prefixes[0]) else ():
            found = found | keys.str.extract(start).is_in(prefixes).fill_null(False)
        return found.to_numpy()

    def findings(
        self, entity: str, kept: pl.Series, column: Callable[[str], str]
    ) -> Iterator[tuple[list[Finding], int]]:
        """Per file, a warning for each record kept because its row was skipped (the first
        SAMPLES) and how many there are. `kept`: their keys; `column(file)`: the ID column."""
        if self.unread or not len(kept):
            return
        exact = self.rows.filter(~pl.col(PREFIX)).unique(KEY, keep="first")
        lines = pl.DataFrame({KEY: kept}).join(exact, on=KEY, how="left")
        prefixes = self.rows.filter(PREFIX).unique(KEY, keep="first").drop(PREFIX)
        for start in STARTS:
            found = lines.with_columns(pl.col(KEY).str.extract(start).alias("_of"))
            by = prefixes.rename({KEY: "_of", LINE: "_l", FILE: "_f"})
            lines = found.join(by, on="_of", how="left", maintain_order="left").select(
                KEY, pl.coalesce(LINE, "_l").alias(LINE), pl.coalesce(FILE, "_f").alias(FILE)
            )
        label = LABELS[entity]
        for (file,), group in lines.sort(LINE).group_by(FILE, maintain_order=True):
            samples = [
                Finding(
                    WARNING,
                    "kept_as_it_was",
                    f"The {label} {key!r} was kept as it was (not updated, not removed) because "
                    f"line {line} of {file} was skipped; see the error on that line.",
                    file,
                    line,
                    column(file),
                    key,
                )
                for key, line in group.head(SAMPLES).select(KEY, LINE).iter_rows()
            ]
            yield samples, group.height


def unreadable(findings: Iterable[Finding]) -> dict[str, int]:
    """The first line of each file that could not be read into a row (findings.UNREADABLE)."""
    first: dict[str, int] = {}
    for f in findings:
        if f.code in UNREADABLE and f.line is not None:
            first[f.file] = min(first.get(f.file, f.line), f.line)
    return first


def withheld(file: str, line: int, removals: int) -> Finding:
    """The one warning for the records a file with an unreadable line did not remove."""
    return Finding(
        WARNING,
        "removal_withheld",
        f"{removals} records not in {file} were kept because line {line} could not be read, or "
        "not well enough to tell which records it names: a record is removed only when a valid "
        "file no longer lists it. Fix the line and send the file again.",
        file,
        line,
    )
