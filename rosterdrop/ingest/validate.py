"""Validate a source file: its header against the spec, then each batch of rows, vectorised.

Row rules: required values, types, enumerations, and the bulk/delta status column. A bad
required value skips the row (error); a bad optional value is cleared (warning); a value whose
meaning is unambiguous (TRUE for true, Student for student) is normalised (warning).
"""

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cached_property

import polars as pl

from rosterdrop.formats.spec import Column, Dialect, FileSpec, Joined, Mode, Type
from rosterdrop.ingest.columns import FAULT, LINE, STATUS
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Finding, FindingLog
from rosterdrop.roster.schema import ID_LENGTH, LIST_LENGTH, REFS, TEXT_LENGTH, max_length
from rosterdrop.timing import timed

SAMPLES = 100
# Values in issues are cut to this many characters.
SHOWN = 200
# Types whose rule refuses any value with a control character: only other columns are looked at.
STRICT_TYPES = frozenset(Type) - {Type.STRING, Type.ENUMS, Type.USER_IDS}

ID_CHARS = r"^[0-9A-Za-z.\-_/@]+$"
ID_LIST_CHARS = r"^[0-9A-Za-z.\-_/@]+(,[0-9A-Za-z.\-_/@]+)*$"
DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
USER_IDS = r"^\{[^:}]+:[^}]+\}(,\{[^:}]+:[^}]+\})*$"
EXT_TERM = r"^ext:[A-Za-z0-9.\-_]+$"
PHONE = r"^\+[1-9][0-9]{1,14}$"
# RFC 5322 addr-spec in its dot-atom form (what every SIS writes; quoted local parts refused).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL = rf"^{_ATOM}(\.{_ATOM})*@{_LABEL}(\.{_LABEL})+$"
# Characters no value keeps: C0 and C1 controls, DEL, bidi overrides and isolates. Free text
# may hold a tab or a line break (a quoted multi-line value); an identifier may not.
# (One pattern for polars' regex and Python's re alike.)
_BIDI = r"\u202A-\u202E\u2066-\u2069"
CONTROL = rf"[\x00-\x1F\x7F-\x9F{_BIDI}]"
TEXT_CONTROL = rf"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F{_BIDI}]"
has_control = re.compile(CONTROL).search


def _shape(name: str) -> str:
    """A column name without case and separators: how a near miss is recognised."""
    return re.sub(r"[\s_\-.]+", "", name.casefold())


def _near(col: Column, header: list[str]) -> tuple[str, str]:
    """A header name that is this column written another way, and how it differs."""
    for h in header:
        if h != col.name and _shape(h) == _shape(col.name):
            if h.casefold() == col.name.casefold():
                return h, "column names are case-sensitive"
            if "_" in col.name and "_" not in h:
                return h, "this format uses underscores"
            return h, f"this format writes it {col.name!r}"
    return "", ""


def _derivation(col: Column) -> str:
    """'endDate (its year)': where a derived value comes from, for messages."""
    assert col.derive is not None  # asked only of a derived column
    return f"{col.derive.column}" + (" (its year)" if col.derive.year else "")


def check_header(file: FileSpec, header: list[str], ordered: bool, log: FindingLog) -> bool:
    """Whether the rows can be read: fatal if a column is doubled or a required one missing
    (every such problem in one finding, with the columns found); warnings for order, unknown
    and missing optional columns."""
    name = file.name
    dialect = file.dialect or Dialect()
    readable = True
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        readable = False
        log.add(
            Finding(
                FATAL,
                "header_duplicate_column",
                f"{', '.join(repr(d) for d in dupes)} appear{'s' * (len(dupes) == 1)} more than "
                f"once in the header of {name}.",
                name,
                1,
                dupes[0],
            )
        )
    found = {col.name for col, _ in file.present(header)}
    missing, near_names = [], set()
    for col in file.columns:
        if col.name in found or col.numbered or col.retired:
            continue
        near, why = _near(col, header)
        hint = f" (found {near!r}: {why})" if near else ""
        near_names.add(near)
        if col.required and col.derive and file.column(col.derive.column) and not near:
            log.add(
                Finding(
                    WARNING,
                    "value_derived",
                    f"{name} has no {col.name!r} column; each row's value was derived from "
                    f"its {_derivation(col)}.",
                    name,
                    1,
                    col.name,
                    outcome=f"each row's value was derived from its {_derivation(col)}",
                )
            )
            continue
        if col.required:
            missing.append(f"{col.name!r}{hint}")
            continue
        if dialect.optional_columns_may_be_absent and not hint:
            continue
        log.add(
            Finding(
                WARNING,
                "header_missing_column",
                f"{name} has no {col.name!r} column{hint}; it is read as empty.",
                name,
                1,
                col.name,
                outcome="it is read as empty",
            )
        )
    if missing:
        readable = False
        first = next(c.name for c in file.columns if c.required and c.name not in found)
        log.add(
            Finding(
                FATAL,
                "header_missing_column",
                f"{name} has no {', '.join(missing)} column{'s' * (len(missing) > 1)}, which "
                f"{'are' if len(missing) > 1 else 'is'} required; the columns found are "
                f"{', '.join(header) or 'none'}. Use the file template for the exact header.",
                name,
                1,
                first,
            )
        )
    order = [c.name for c in file.columns]
    seen = [order.index(col.name) for col, _ in file.present(header)]
    if ordered and seen != sorted(seen):
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
    for h in filter(has_control, header):
        log.add(
            Finding(
                WARNING,
                "header_control_character",
                f"{name} has a column {cut(h)!r} whose name holds control or text-direction "
                "characters; its values were ignored.",
                name,
                1,
                shown(h),
                outcome="its values were ignored",
            )
        )
    if file.open_columns:
        return readable
    for h in header:
        if has_control(h) or h in near_names:
            continue  # said above, or named with the column it stands for
        if file.column(h) is None and not (file.extra_prefix and h.startswith(file.extra_prefix)):
            close = difflib.get_close_matches(
                h, [c.name for c in file.columns if c.name not in found], n=1, cutoff=0.8
            )
            if close:
                log.add(
                    Finding(
                        WARNING,
                        "header_near_column",
                        f"{name} has a column {h!r} that the format does not define; did you "
                        f"mean {close[0]!r}? Its values are kept as extra data, and {close[0]!r} "
                        "is read as empty.",
                        name,
                        1,
                        h,
                        close[0],
                        outcome=f"Its values are kept as extra data, and {close[0]!r} is read "
                        "as empty",
                    )
                )
                continue
            log.add(
                Finding(
                    WARNING,
                    "header_unknown_column",
                    f"{name} has a column {h!r} that the format does not define; "
                    "its values are kept as extra data.",
                    name,
                    1,
                    h,
                    outcome="its values are kept as extra data",
                )
            )
    return readable


def unreadable_id(key: tuple[str, ...], present: set[str]) -> pl.Expr:
    """Rows whose own ID cannot be read: a part of it empty, or holding a control character."""
    parts = [pl.col(c) for c in key if c in present]
    if not parts:
        return pl.lit(False)
    return pl.any_horizontal([(p == "") | p.str.contains(CONTROL) for p in parts])


def faulty(columns: tuple[str, ...], present: set[str]) -> pl.Expr:
    """Skipped rows skipped for the value of one of these columns (FAULT)."""
    marks = [pl.col(FAULT + c).fill_null(False) for c in columns if FAULT + c in present]
    return pl.any_horizontal(marks) if marks else pl.lit(False)


@dataclass(frozen=True)
class Bounds:
    """How a kept column's values are kept clean: the longest value, and whether it holds an
    identifier (a control character skips the row) or text (control characters are removed).
    """

    name: str
    length: int
    identifier: bool
    controls: bool  # looked at for control characters (else its type's rule refuses them)


def _sources(source: str | tuple[str, ...] | Joined) -> tuple[str, ...]:
    if isinstance(source, Joined):
        return source.columns
    return (source,) if isinstance(source, str) else source


def value_bounds(file: FileSpec, header: list[str], renames: dict[str, str]) -> list[Bounds]:
    """The bounds of every column whose values are kept (secret and delta columns are not)."""
    lengths: dict[str, int] = {}
    ids: set[str] = set()

    def use(name: str, length: int, identifier: bool) -> None:
        lengths[name] = min(lengths.get(name, length), length)
        if identifier:
            ids.add(name)

    for output in file.outputs:
        refs = {r.field for r in REFS.get(output.entity, ())}
        for field, source in output.fields.items():
            for name in _sources(source):
                use(name, max_length(field), field in refs)
        for name in output.key:
            use(name, ID_LENGTH, True)
        if output.explode:
            use(output.explode, LIST_LENGTH, True)
    bounds = []
    for h in header:
        col = file.column(h)
        if col is not None and (col.secret or col.delta_only):
            continue
        name = renames.get(h, h)
        unpivoted = any(col is not None and col.name in o.unpivot for o in file.outputs)
        identifier = name in ids or unpivoted
        length = ID_LENGTH if unpivoted else lengths.get(name, TEXT_LENGTH)
        strict = col is not None and col.type in STRICT_TYPES
        bounds.append(Bounds(name, length, identifier, not strict))
    return bounds


def cut(value: str) -> str:
    """A value as an issue shows it: cut to SHOWN characters."""
    return value[:SHOWN] + ("..." if len(value) > SHOWN else "")


def shown(value: str) -> str:
    """A value as an issue keeps it: cut, control characters written as escapes (a NUL
    cannot be stored in PostgreSQL's text)."""
    value = cut(value)
    return value if value.isprintable() else repr(value)[1:-1]


@dataclass(frozen=True)
class Rule:
    """A check of one column's non-empty values: what is invalid, what is fixable."""

    code: str
    expected: str  # "a date in the form YYYY-MM-DD (e.g. 2025-08-15)"
    invalid: Callable[[pl.Expr], pl.Expr]
    # Values that are invalid as written but have one clear meaning -> (mask, normalised).
    fixable: Callable[[pl.Expr], tuple[pl.Expr, pl.Expr]] | None = None
    # Valid values written in another accepted form -> (mask, normalised); no issue.
    normalise: Callable[[pl.Expr], tuple[pl.Expr, pl.Expr]] | None = None
    # Invalid values that could mean more than one thing -> (mask, what they could mean);
    # refused like the others, saying the readings and why (`ambiguous_why`).
    ambiguous: Callable[[pl.Expr], tuple[pl.Expr, pl.Expr]] | None = None
    ambiguous_why: str = ""


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


def _enum_rule(col: Column, values: tuple[str, ...], quiet: bool, code: str, expected: str) -> Rule:
    """Exact values; other case folded (a warning, or silently where the format allows it)."""
    allowed = list(values)
    lowered = [v.lower() for v in values]
    ext = col.extensible
    fold = _fold_case(values)

    def invalid(e: pl.Expr) -> pl.Expr:
        term = e.str.contains(EXT_TERM) if ext else pl.lit(False)
        known = e.str.to_lowercase().is_in(lowered) if quiet else e.is_in(allowed)
        return ~(known | term)

    def other_case(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        mask, normalised = fold(e)
        return mask & ~e.is_in(allowed), normalised

    return Rule(
        code,
        expected + (" (or ext:Name)" if ext else ""),
        invalid,
        None if quiet else fold,
        other_case if quiet else None,
    )


# What exports write for a boolean: each read as true or false, with a warning (TRUE, Yes).
BOOLEAN_WORDS = {
    **dict.fromkeys(("true", "t", "yes", "y", "1"), "true"),
    **dict.fromkeys(("false", "f", "no", "n", "0"), "false"),
}


def _boolean_rule(quiet: bool) -> Rule:
    """true or false; other case silently where the format allows it, and every other way
    of writing them (TRUE, Yes, Y, 1, No, 0) read with a warning."""
    words = list(BOOLEAN_WORDS)

    def invalid(e: pl.Expr) -> pl.Expr:
        return ~e.str.to_lowercase().is_in(words)

    def synonym(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        low = e.str.to_lowercase()
        other = ~low.is_in(["true", "false"]) if quiet else ~e.is_in(["true", "false"])
        return low.is_in(words) & other, low.replace_strict(BOOLEAN_WORDS, default=None)

    def other_case(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        low = e.str.to_lowercase()
        return low.is_in(["true", "false"]) & ~e.is_in(["true", "false"]), low

    def invalid_as_written(e: pl.Expr) -> pl.Expr:
        return invalid(e) | synonym(e)[0]

    return Rule(
        "boolean_invalid",
        "true or false",
        invalid_as_written,
        synonym,
        other_case if quiet else None,
    )


def _date_form(fmt: str) -> str:
    """'%m/%d/%Y' -> 'a date written MM/DD/YYYY (e.g. 08/15/2025)', for messages."""
    shown = fmt.replace("%Y", "YYYY").replace("%y", "YY").replace("%m", "MM").replace("%d", "DD")
    return f"a date written {shown} (e.g. {date(2025, 8, 15).strftime(fmt)})"


# A time of day that says nothing: midnight, as spreadsheets and databases append it.
MIDNIGHT = r"(?:[ T]0{1,2}:00(?::00(?:\.0+)?)?Z?| 12:00(?::00)? ?AM)$"
YEAR_FIRST = r"^(\d{4})([/.-])(\d{1,2})([/.-])(\d{1,2})$"
YEAR_LAST = r"^(\d{1,2})([/.-])(\d{1,2})([/.-])(\d{4})$"


def _iso(year: pl.Expr, month: pl.Expr, day: pl.Expr) -> pl.Expr:
    """The date these parts make, or null where there is no such day."""
    pad = [p.cast(pl.String).str.zfill(2) for p in (month, day)]
    return pl.format("{}-{}-{}", year, *pad).str.to_date("%Y-%m-%d", strict=False)


def _year_last(e: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """A day and a month before a four-digit year, one separator: (first, second, year)."""
    parts = e.str.replace(MIDNIGHT, "").str.extract_groups(YEAR_LAST)
    same = parts.struct.field("2") == parts.struct.field("4")
    first, second = (parts.struct.field(n).cast(pl.Int32) for n in ("1", "3"))
    return (
        pl.when(same).then(first),
        pl.when(same).then(second),
        parts.struct.field("5"),
    )


def _certain_date(
    e: pl.Expr, declared: Callable[[pl.Expr], pl.Expr], order_declared: bool
) -> pl.Expr:
    """The one date a value not written in a declared form can mean, else null: a declared
    form with a midnight time after it, year/month/day with any separator, and -- where the
    format declares no day-month order of its own -- a day and month either way round when
    one of them is over 12 or both are the same."""
    day = e.str.replace(MIDNIGHT, "")
    ymd = day.str.extract_groups(YEAR_FIRST)
    year_first = pl.when(ymd.struct.field("2") == ymd.struct.field("4")).then(
        _iso(*(ymd.struct.field(n) for n in ("1", "3", "5")))
    )
    readings = [declared(day), year_first]
    if not order_declared:
        first, second, year = _year_last(e)
        month = (
            pl.when((first > 12) & (second <= 12))
            .then(second)
            .when(((second > 12) & (first <= 12)) | (first == second))
            .then(first)
        )
        readings.append(_iso(year, month, pl.when(month == second).then(first).otherwise(second)))
    return pl.coalesce(readings)


def _ambiguous_date(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Values that are a date read either way round (04/05/2021): (mask, both readings)."""
    first, second, year = _year_last(e)
    as_us, as_uk = _iso(year, first, second), _iso(year, second, first)
    both = as_us.is_not_null() & as_uk.is_not_null() & (first != second)
    shown = pl.format("{} or {}", as_us.dt.strftime("%Y-%m-%d"), as_uk.dt.strftime("%Y-%m-%d"))
    return both.fill_null(False), shown


def _date_rule(formats: tuple[str, ...]) -> Rule:
    """Declared forms; beyond them a date whose meaning is certain is read (a warning), one
    that could be two dates is refused saying which two (README, "Tolerance policy")."""
    iso, *others = formats
    # Whether the format itself says which of day and month comes first (M/D/YYYY).
    order_declared = any(f.index("%Y") > 0 for f in formats if "%Y" in f)

    def as_iso(e: pl.Expr) -> pl.Expr:
        parsed = e.str.to_date(iso, strict=False)
        return (
            pl.when(e.str.contains(r"^\d{4}-\d{2}-\d{2}$")).then(parsed)
            if iso == "%Y-%m-%d"
            else parsed
        )

    def declared(e: pl.Expr) -> pl.Expr:
        """The date a value written in a declared form is, else null."""
        return pl.coalesce([as_iso(e), *(e.str.to_date(f, strict=False) for f in others)])

    def other_form(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        parsed = declared(e)
        return parsed.is_not_null() & as_iso(e).is_null(), parsed.dt.strftime("%Y-%m-%d")

    def certain(e: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        read = _certain_date(e, declared, order_declared)
        return read.is_not_null(), read.dt.strftime("%Y-%m-%d")

    return Rule(
        "date_invalid",
        " or ".join(_date_form(f) for f in formats),
        lambda e: declared(e).is_null(),
        fixable=certain,
        normalise=other_form if others else None,
        ambiguous=None if order_declared else _ambiguous_date,
        ambiguous_why="its day and month are both 12 or under, so which is which is not certain",
    )


# Types whose values are checked by one pattern: (issue code, what is expected, pattern).
PATTERNS: dict[Type, tuple[str, str, str]] = {
    Type.ID: ("id_invalid", "an ID of letters, digits and . - _ / @", ID_CHARS),
    Type.IDS: (
        "id_invalid",
        "IDs of letters, digits and . - _ / @, separated by commas",
        ID_LIST_CHARS,
    ),
    Type.DATETIME: (
        "datetime_invalid",
        "a UTC date and time such as 2025-08-15T13:45:00.000Z",
        DATETIME,
    ),
    Type.USER_IDS: ("userids_invalid", "a list like {LDAP:abc},{LTI:123}", USER_IDS),
    Type.INTEGER: ("integer_invalid", "a whole number", r"^-?\d+$"),
    Type.PHONE: (
        "phone_invalid",
        "a phone number in E.164 form: + and the country code, e.g. +14255550100",
        PHONE,
    ),
    Type.EMAIL: ("email_invalid", "an email address such as jane.doe@example.org", EMAIL),
}


def rule_for(col: Column, dialect: Dialect | None = None) -> Rule | None:
    dialect = dialect or Dialect()
    quiet = dialect.case_insensitive_enums
    if col.type in PATTERNS:
        code, expected, pattern = PATTERNS[col.type]
        return Rule(code, expected, lambda e: ~e.str.contains(pattern))
    match col.type:
        case Type.DATE:
            return _date_rule(dialect.date_formats)
        case Type.BOOLEAN:
            return _boolean_rule(quiet)
        case Type.YEAR:
            return Rule(
                "year_invalid",
                "a year such as 2026",
                lambda e: ~e.str.contains(r"^\d{4}$"),
                _year_range,
            )
        case Type.ENUM:
            return _enum_rule(
                col, col.values, quiet, "enum_invalid", "one of " + ", ".join(col.values)
            )
    return None


def _fault(faults: dict[str, pl.Series], column: str, mask: pl.Series) -> pl.Series:
    """Note that `column`'s value skips the rows of `mask`; returns `mask`."""
    faults[column] = faults[column] | mask if column in faults else mask
    return mask


class RowChecker:
    """Checks batches of one file; keeps the running row count and findings."""

    def __init__(
        self, file: FileSpec, header: list[str], mode: Mode, log: FindingLog, told: bool = False
    ):
        """`told`: keep the lines of the rows told about, for `told_lines` (a read does not:
        a file whose every row is warned about would hold each line's number to its end)."""
        self.file, self.mode, self.log = file, mode, log
        self.dialect = file.dialect or Dialect()
        present = [(c, h) for c, h in file.present(header) if not c.delta_only]
        # Columns known by an alias are renamed to the spec's name; numbered ones keep theirs.
        self.renames = {h: c.name for c, h in present if h != c.name and not c.numbered}
        self.columns = [(c, h if c.numbered else c.name) for c, h in present]
        # Required columns made from another one where the export left them out (Derive).
        names = {c.name for c, _ in present}
        self.derived = [
            c for c in file.columns if c.derive and c.required and c.derive.column in names
        ]
        self.columns += [(c, c.name) for c in self.derived if c.name not in names]
        self._sent = names
        self.bounds = value_bounds(file, header, self.renames)
        self.rows = 0
        self.skipped = 0
        # The rows the last batch's checks skipped, for what refers to them.
        self.rejected = pl.DataFrame()
        self.status_column = file.status_column if file.status_column in header else ""
        self._bulk_status_rows = 0
        self._seen: dict[str, pl.DataFrame] = {}
        # The lines of the rows told about since `told_lines` was last asked (a finding each,
        # however many a kind's samples show): what a build keeping a file's checked lines
        # leaves out, to be read, and told, again (lines.CheckedLines). None: not kept.
        self._told: list[pl.Series] | None = [] if told else None

    @timed("validate", batch=True)
    def check(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Return the batch with fixable values normalised and invalid rows removed."""
        return self.check_prepared(self.prepare(frame))

    def prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        """What every row goes through, checked or vouched for (ingest/vouched.py): columns
        known by an alias renamed, the row counted, its status given."""
        frame = frame.rename(self.renames) if self.renames else frame
        self.rows += frame.height
        return self._derive(frame).with_columns(self._status(frame))

    def taken(self, rows: int, with_status: int) -> None:
        """Rows taken as their last read mapped them (ingest/lines.py), counted as `prepare`
        counts rows; `with_status`: how many of them say a status."""
        self.rows += rows
        if self.mode == Mode.BULK:
            self._bulk_status_rows += with_status

    def _derive(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Required values the export left out, made from another column (a warning each;
        one for the file where the whole column is missing, said with the header)."""
        for col in self.derived:
            assert col.derive is not None  # `derived` holds the columns that have one
            source = pl.col(col.derive.column)
            value = source.str.extract(r"(\d{4})").fill_null("") if col.derive.year else source
            if col.name not in self._sent:
                frame = frame.with_columns(value.alias(col.name))
                continue
            empty = frame.select((pl.col(col.name) == "") & (source != "")).to_series()
            if not empty.any():
                continue
            what = f"was empty; it was derived from its {_derivation(col)}"
            self._report(frame, empty, col.name, "value_derived", WARNING, what,
                         outcome=f"it was derived from its {_derivation(col)}")  # fmt: skip
            frame = frame.with_columns(
                pl.when(pl.lit(empty)).then(value).otherwise(pl.col(col.name)).alias(col.name)
            )
        return frame

    def check_prepared(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`check` of a prepared batch.

        Every column's masks are computed in one pass over the batch; the per-column work
        after that only runs for columns where something was found.
        """
        faults: dict[str, pl.Series] = {}
        frame, bad = self._bounded(frame, faults)
        masks = frame.select(self._mask_exprs)
        fixes = {}
        for i, (col, name, rule) in enumerate(self._rules):
            empty = masks[f"{i}:empty"]
            if col.required and empty.any():
                self._report(frame, empty, name, "required_missing", ERROR, "is empty but required")
                bad = bad | _fault(faults, name, empty)
            if rule is None:
                continue
            invalid = masks[f"{i}:invalid"]
            if rule.normalise is not None:
                mask = masks[f"{i}:normalise"]
                if mask.any():
                    normalised = rule.normalise(pl.col(name))[1]
                    fixes[name] = pl.when(pl.lit(mask)).then(normalised).otherwise(pl.col(name))
            if not invalid.any():
                continue
            if rule.fixable is not None:
                fixable, normalised = rule.fixable(pl.col(name))
                can_fix = frame.select(fixable).to_series() & invalid
                if can_fix.any():
                    self._report(
                        frame,
                        can_fix,
                        name,
                        rule.code.replace("invalid", "normalised"),
                        WARNING,
                        f"is not written as {rule.expected}; it was read as {{detail}}",
                        detail=normalised,
                    )
                    current = fixes.get(name, pl.col(name))
                    fixes[name] = pl.when(pl.lit(can_fix)).then(normalised).otherwise(current)
                    invalid = invalid & ~can_fix
            if not invalid.any():
                continue
            severity, outcome = (
                (ERROR, "the row was skipped")
                if col.required
                else (WARNING, "the value was left empty")
            )
            should = f"should be {rule.expected}; {outcome}"
            unclear = pl.repeat(False, frame.height, eager=True)
            if rule.ambiguous is not None:
                two_ways, readings = rule.ambiguous(pl.col(name))
                unclear = frame.select(two_ways).to_series() & invalid
                self._report(
                    frame, unclear, name, rule.code, severity,
                    f"could be {{detail}}: {rule.ambiguous_why}; it {should}",
                    outcome=outcome, detail=readings,
                )  # fmt: skip
            self._report(
                frame, invalid & ~unclear, name, rule.code, severity, should, outcome=outcome
            )
            if col.required:
                bad = bad | _fault(faults, name, invalid)
            else:
                current = fixes.get(name, pl.col(name))
                fixes[name] = pl.when(pl.lit(invalid)).then(pl.lit("")).otherwise(current)
        bad = bad | self._row_rules(frame, bad) | self._repeated(frame, bad)
        height = frame.height
        frame = frame.with_columns(**fixes) if fixes else frame
        self.rejected = frame.clear()
        if bad.any() or self.status_column and self.mode != Mode.BULK:
            kept = ~bad & frame[STATUS].is_not_null()
            marks = [mask.alias(FAULT + name) for name, mask in faults.items()]
            self.rejected = frame.with_columns(marks).filter(~kept)
            frame = frame.filter(kept)
        self.skipped += height - frame.height
        return frame

    def _bounded(
        self, frame: pl.DataFrame, faults: dict[str, pl.Series]
    ) -> tuple[pl.DataFrame, pl.Series]:
        """Values kept clean and bounded (README, "Values are bounded and clean"): a value
        too long, or an identifier holding a control character, skips its row; control
        characters in text are removed. Returns the batch and the rows to skip (why: `faults`)."""
        bad = pl.repeat(False, frame.height, eager=True)
        masks = frame.select(self._bound_exprs)
        if not masks.select(pl.any_horizontal(pl.all().any())).item():
            return frame, bad
        cleaned = {}
        for i, b in enumerate(self.bounds):
            long = masks[f"{i}:long"]
            if long.any():  # bytes first (cheap); characters where that says it may be
                long = long & frame.select(pl.col(b.name).str.len_chars() > b.length).to_series()
                self._report(
                    frame,
                    long,
                    b.name,
                    "value_too_long",
                    ERROR,
                    f"is longer than the {b.length} characters allowed; the row was skipped",
                    outcome="the row was skipped",
                )
                bad = bad | _fault(faults, b.name, long)
            control = masks[f"{i}:control"] if b.controls else None
            if control is None or not control.any():
                continue
            if b.identifier:
                self._report(
                    frame, control, b.name, "control_character", ERROR,
                    "holds a control or text-direction character, which an ID cannot; the row "
                    "was skipped", outcome="the row was skipped",
                )  # fmt: skip
                bad = bad | _fault(faults, b.name, control)
            else:
                self._report(
                    frame,
                    control,
                    b.name,
                    "control_character_removed",
                    WARNING,
                    "holds control or text-direction characters; they were removed",
                    outcome="they were removed",
                )
                cleaned[b.name] = pl.col(b.name).str.replace_all(TEXT_CONTROL, "")
        return (frame.with_columns(**cleaned) if cleaned else frame), bad

    @cached_property
    def _bound_exprs(self) -> list[pl.Expr]:
        exprs = []
        for i, b in enumerate(self.bounds):
            value = pl.col(b.name)
            exprs.append((value.str.len_bytes() > b.length).fill_null(False).alias(f"{i}:long"))
            if b.controls:
                pattern = CONTROL if b.identifier else TEXT_CONTROL
                exprs.append(value.str.contains(pattern).fill_null(False).alias(f"{i}:control"))
        return exprs

    @property
    def checked_columns(self) -> list[str]:
        """The columns whose values are checked, by their spec names."""
        return [name for _, name in self.columns]

    @cached_property
    def _rules(self) -> list[tuple[Column, str, Rule | None]]:
        return [(col, name, rule_for(col, self.dialect)) for col, name in self.columns]

    @cached_property
    def _mask_exprs(self) -> list[pl.Expr]:
        exprs = []
        for i, (_, name, rule) in enumerate(self._rules):
            value = pl.col(name)
            empty = value == ""
            exprs.append(empty.alias(f"{i}:empty"))
            if rule is None:
                continue
            invalid = rule.invalid(value).fill_null(False) & ~empty
            exprs.append(invalid.alias(f"{i}:invalid"))
            if rule.normalise is not None:
                other = rule.normalise(value)[0].fill_null(False)
                exprs.append((other & ~empty & ~invalid).alias(f"{i}:normalise"))
        return exprs

    def _row_rules(self, frame: pl.DataFrame, bad: pl.Series) -> pl.Series:
        """Rows that break one of the file's row rules (none of the columns filled)."""
        broken = pl.repeat(False, frame.height, eager=True)
        for rule in self.file.row_rules:
            filled = [frame[c] != "" for c in rule.columns if c in frame.columns]
            none = ~pl.select(pl.any_horizontal(filled)).to_series() if filled else ~broken
            none = none & ~bad
            names = " or ".join(rule.columns)
            self._report(
                frame,
                none,
                rule.columns[0],
                rule.code,
                ERROR,
                f"has no {names}; {rule.why}, so the row was not imported",
                label="The row",
                outcome="so the row was not imported",
            )
            broken = broken | none
        return broken

    def _repeated(self, frame: pl.DataFrame, bad: pl.Series) -> pl.Series:
        """Rows repeating a value that must be unique in the file (e.g. a school's name)."""
        repeated = pl.repeat(False, frame.height, eager=True)
        for name in self.file.unique:
            if name not in frame.columns:
                continue
            rows = frame.select(pl.col(name).alias("_v"), pl.col(LINE)).filter(
                (pl.col("_v") != "") & ~pl.lit(bad)
            )
            seen = self._seen.get(name, rows.clear())
            both = pl.concat([seen, rows])
            first = both.group_by("_v", maintain_order=True).agg(pl.col(LINE).first().alias("_f"))
            dupes = rows.join(first, on="_v").filter(pl.col(LINE) != pl.col("_f"))
            self._seen[name] = both.unique("_v", keep="first", maintain_order=True)
            mask = frame[LINE].is_in(dupes[LINE].implode())
            if self._told is not None:
                self._told.append(dupes[LINE])
            for value, line, first_line in dupes.head(SAMPLES).iter_rows():
                self.log.add(
                    Finding(
                        ERROR,
                        "duplicate_value",
                        f"{name} {value!r} on line {line} was already used on line {first_line}; "
                        f"each value of {name} must appear once in {self.file.name}, so the row "
                        "was skipped.",
                        self.file.name,
                        line,
                        name,
                        value,
                        outcome="so the row was skipped",
                    )
                )
            repeated = repeated | mask
        return repeated

    def told_lines(self) -> pl.Series:
        """The lines of the rows told about (a finding each) since this was last asked."""
        assert self._told is not None, "a checker made with told=True"
        told = pl.concat(self._told) if self._told else pl.Series(LINE, [], dtype=pl.UInt32)
        self._told = []
        return told

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
        self._report(
            frame,
            ~valid,
            self.status_column,
            "status_invalid",
            ERROR,
            "must be active or tobedeleted in a delta file; the row was skipped",
            outcome="the row was skipped",
        )
        return pl.when(pl.lit(valid)).then(pl.col(self.status_column)).otherwise(None).alias(STATUS)

    def _report(
        self,
        frame: pl.DataFrame,
        mask: pl.Series,
        column: str,
        code: str,
        severity: str,
        what: str,
        label: str = "",
        outcome: str = "",
        detail: pl.Expr | None = None,
    ) -> None:
        """`outcome`: the words of `what` that say what became of the row (Finding);
        `detail`: a value of each row, put where `what` says {detail} (what it was read as)."""
        total = int(mask.sum())
        if not total:
            return
        if self._told is not None:
            self._told.append(frame[LINE].filter(mask))
        label = label or column
        detail = pl.lit("") if detail is None else detail
        sample = frame.filter(mask).head(SAMPLES).select(LINE, column, detail.alias("_detail"))
        findings = [
            Finding(
                severity,
                code,
                f"{label} {cut(value)!r} on line {line} {what.replace('{detail}', more)}."
                if value
                else f"{label} on line {line} {what}.",
                self.file.name,
                line,
                column,
                shown(value),
                outcome=outcome,
            )
            for line, value, more in sample.iter_rows()
        ]
        self.log.add_counted(findings, total)
