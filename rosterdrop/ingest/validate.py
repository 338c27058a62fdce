"""Validate a source file: its header against the spec, then each batch of rows, vectorised.

Row rules: required values, types, enumerations, and the bulk/delta status column. A bad
required value skips the row (error); a bad optional value is cleared (warning); a value whose
meaning is unambiguous (TRUE for true, Student for student) is normalised (warning).
"""

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from rosterdrop.formats.spec import Column, FileSpec, Mode, Type
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding, FindingLog
from rosterdrop.ingest.read import LINE

SAMPLES = 100
STATUS = "_status"

ID_CHARS = r"^[0-9A-Za-z.\-_/@]+$"
ID_LIST_CHARS = r"^[0-9A-Za-z.\-_/@]+(,[0-9A-Za-z.\-_/@]+)*$"
DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
USER_IDS = r"^\{[^:}]+:[^}]+\}(,\{[^:}]+:[^}]+\})*$"
EXT_TERM = r"^ext:[A-Za-z0-9.\-_]+$"


def check_header(file: FileSpec, header: list[str], ordered: bool, log: FindingLog) -> None:
    """Fatal if a required column is missing; warnings for order, unknown and missing optional."""
    name = file.name
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise Failure(
            Finding(
                FATAL,
                "header_duplicate_column",
                f"Column {dupes[0]!r} appears more than once in the header of {name}.",
                name,
                1,
                dupes[0],
            )
        )
    lower = {h.lower(): h for h in header}
    for col in file.columns:
        if col.name in header:
            continue
        hint = ""
        if col.name.lower() in lower:
            hint = f" (found {lower[col.name.lower()]!r}: column names are case-sensitive)"
        if col.required:
            raise Failure(
                Finding(
                    FATAL,
                    "header_missing_column",
                    f"{name} has no {col.name!r} column, which is required{hint}. "
                    "Use the file template for the exact header.",
                    name,
                    1,
                    col.name,
                )
            )
        log.add(
            Finding(
                WARNING,
                "header_missing_column",
                f"{name} has no {col.name!r} column{hint}; it is read as empty.",
                name,
                1,
                col.name,
            )
        )
    known = [c.name for c in file.columns if c.name in header]
    if ordered and [h for h in header if h in known] != known:
        log.add(
            Finding(
                WARNING,
                "header_order",
                f"The columns of {name} are not in the order the format defines; "
                "they were read by name.",
                name,
                1,
            )
        )
    for h in header:
        if file.column(h) is None and not (file.extra_prefix and h.startswith(file.extra_prefix)):
            log.add(
                Finding(
                    WARNING,
                    "header_unknown_column",
                    f"{name} has a column {h!r} that the format does not define; "
                    "its values are kept as extra data.",
                    name,
                    1,
                    h,
                )
            )


@dataclass(frozen=True)
class Rule:
    """A check of one column's non-empty values: what is invalid, what is fixable."""

    code: str
    expected: str  # "a date in the form YYYY-MM-DD (e.g. 2025-08-15)"
    invalid: Callable[[pl.Expr], pl.Expr]
    # Values that are invalid as written but have one clear meaning -> (mask, normalised).
    fixable: Callable[[pl.Expr], tuple[pl.Expr, pl.Expr]] | None = None


def _fold_case(values: tuple[str, ...]) -> Callable[[pl.Expr], tuple[pl.Expr, pl.Expr]]:
    lowered = {v.lower(): v for v in values}

    def fix(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        low = e.str.to_lowercase()
        return low.is_in(list(lowered)), low.replace_strict(lowered, default=None)

    return fix


def _year_range(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    parts = e.str.extract_groups(r"^(\d{4})-(\d{4})$")
    first = parts.struct.field("1").cast(pl.Int32, strict=False)
    last = parts.struct.field("2").cast(pl.Int32, strict=False)
    return (last - first == 1).fill_null(False), parts.struct.field("2")


def rule_for(col: Column) -> Rule | None:
    match col.type:
        case Type.STRING:
            return None
        case Type.ID:
            return Rule(
                "id_invalid",
                "an ID of letters, digits and . - _ / @",
                lambda e: ~e.str.contains(ID_CHARS),
            )
        case Type.IDS:
            return Rule(
                "id_invalid",
                "IDs of letters, digits and . - _ / @, separated by commas",
                lambda e: ~e.str.contains(ID_LIST_CHARS),
            )
        case Type.DATE:
            return Rule(
                "date_invalid",
                "a date written YYYY-MM-DD (e.g. 2025-08-15)",
                lambda e: (
                    e.str.to_date("%Y-%m-%d", strict=False).is_null()
                    | ~e.str.contains(r"^\d{4}-\d{2}-\d{2}$")
                ),
            )
        case Type.DATETIME:
            return Rule(
                "datetime_invalid",
                "a UTC date and time such as 2025-08-15T13:45:00.000Z",
                lambda e: ~e.str.contains(DATETIME),
            )
        case Type.BOOLEAN:
            return Rule(
                "boolean_invalid",
                "true or false",
                lambda e: ~e.is_in(["true", "false"]),
                _fold_case(("true", "false")),
            )
        case Type.YEAR:
            return Rule(
                "year_invalid",
                "a year such as 2026",
                lambda e: ~e.str.contains(r"^\d{4}$"),
                _year_range,
            )
        case Type.ENUM:
            allowed = list(col.values)
            ext = col.extensible
            return Rule(
                "enum_invalid",
                "one of " + ", ".join(col.values) + (" (or ext:Name)" if ext else ""),
                lambda e: (
                    ~(e.is_in(allowed) | (e.str.contains(EXT_TERM) if ext else pl.lit(False)))
                ),
                _fold_case(col.values),
            )
        case Type.USER_IDS:
            return Rule(
                "userids_invalid",
                "a list like {LDAP:abc},{LTI:123}",
                lambda e: ~e.str.contains(USER_IDS),
            )
        case Type.INTEGER:
            return Rule("integer_invalid", "a whole number", lambda e: ~e.str.contains(r"^-?\d+$"))
    return None


class RowChecker:
    """Checks batches of one file; keeps the running row count and findings."""

    def __init__(self, file: FileSpec, header: list[str], mode: Mode, log: FindingLog):
        self.file, self.mode, self.log = file, mode, log
        self.columns = [c for c in file.columns if c.name in header and not c.delta_only]
        self.rows = 0
        self.skipped = 0
        self.status_column = file.status_column if file.status_column in header else ""
        self._bulk_status_rows = 0

    def check(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Return the batch with fixable values normalised and invalid rows removed."""
        self.rows += frame.height
        bad = pl.Series("bad", [False] * frame.height, dtype=pl.Boolean)
        fixes = {}
        for col in self.columns:
            values = frame[col.name]
            empty = values == ""
            if col.required:
                self._report(frame, empty, col, "required_missing", ERROR, "is empty but required")
                bad = bad | empty
            rule = rule_for(col)
            if rule is None:
                continue
            nonempty = frame.select(~pl.col(col.name).eq("")).to_series()
            invalid = frame.select(rule.invalid(pl.col(col.name))).to_series() & nonempty
            if rule.fixable is not None and invalid.any():
                fixable, normalised = rule.fixable(pl.col(col.name))
                can_fix = frame.select(fixable).to_series() & invalid
                if can_fix.any():
                    self._report(
                        frame, can_fix, col, rule.code.replace("invalid", "normalised"), WARNING,
                        f"is not written as {rule.expected}; it was read as its obvious meaning",
                    )  # fmt: skip
                    fixes[col.name] = (
                        pl.when(pl.lit(can_fix)).then(normalised).otherwise(pl.col(col.name))
                    )
                    invalid = invalid & ~can_fix
            if not invalid.any():
                continue
            if col.required:
                self._report(
                    frame, invalid, col, rule.code, ERROR,
                    f"should be {rule.expected}; the row was skipped",
                )  # fmt: skip
                bad = bad | invalid
            else:
                self._report(
                    frame, invalid, col, rule.code, WARNING,
                    f"should be {rule.expected}; the value was left empty",
                )  # fmt: skip
                fixes[col.name] = (
                    pl.when(pl.lit(invalid))
                    .then(pl.lit(""))
                    .otherwise(fixes.get(col.name, pl.col(col.name)))
                )
        height = frame.height
        frame = frame.with_columns(**fixes) if fixes else frame
        frame = frame.with_columns(self._status(frame))
        frame = frame.filter(~bad & pl.col(STATUS).is_not_null())
        self.skipped += height - frame.height
        return frame

    def finish(self) -> None:
        """File-level findings, once the last batch is checked."""
        if self._bulk_status_rows:
            self.log.add(
                Finding(
                    WARNING,
                    "bulk_status_present",
                    f"{self._bulk_status_rows} rows of {self.file.name} carry a status although "
                    "the file is a full (bulk) file; rows marked tobedeleted were treated as "
                    "not sent, the others as active.",
                    self.file.name,
                    column=self.status_column,
                )
            )

    def _status(self, frame: pl.DataFrame) -> pl.Expr:
        """The row's status: bulk rows are active; delta rows must say active or tobedeleted."""
        if not self.status_column:
            return pl.lit("active").alias(STATUS)
        status = frame[self.status_column]
        if self.mode == Mode.BULK:
            self._bulk_status_rows += int((status != "").sum())
            return (
                pl.when(status == "tobedeleted")
                .then(pl.lit("tobedeleted"))
                .otherwise(pl.lit("active"))
                .alias(STATUS)
            )
        valid = status.is_in(["active", "tobedeleted"])
        col = self.file.column(self.status_column)
        self._report(
            frame, ~valid, col, "status_invalid", ERROR,
            "must be active or tobedeleted in a delta file; the row was skipped",
        )  # fmt: skip
        return pl.when(pl.lit(valid)).then(pl.col(self.status_column)).otherwise(None).alias(STATUS)

    def _report(
        self, frame: pl.DataFrame, mask: pl.Series, col: Column, code: str, severity: str, what: str
    ) -> None:
        total = int(mask.sum())
        if not total:
            return
        sample = frame.filter(mask).head(SAMPLES).select(LINE, col.name)
        findings = [
            Finding(
                severity,
                code,
                f"{col.name} {value!r} on line {line} {what}."
                if value
                else f"{col.name} on line {line} {what}.",
                self.file.name,
                line,
                col.name,
                value,
            )
            for line, value in sample.iter_rows()
        ]
        self.log.add_counted(findings, total)
