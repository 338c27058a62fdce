"""Issues as the pipeline finds them, before they are stored with a sync."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

FATAL, ERROR, WARNING = "fatal", "error", "warning"

# Beyond this many issues of one kind (file, code, column), only a count is kept.
KEEP_PER_KIND = 100
# Lines that could not be read into a row, so their record's ID is unknown: a full file with
# one removes nothing (ingest/kept.py).
UNREADABLE = frozenset(
    {"csv_syntax", "row_width", "unterminated_quote", "field_too_large", "utf8_invalid"}
)

# What real exports commonly get wrong and rosterdrop accepts with a warning, since its
# meaning is certain (README, "Tolerance policy"). A strict district (District.strict) takes
# files only as the specification writes them: for it, each of these refuses the upload.
TOLERATED = frozenset(
    {
        "manifest_missing",  # OneRoster without manifest.csv: every file read as bulk
        "file_not_sent",  # a file the manifest lists is not there: its records left alone
        "manifest_property_unknown",  # a property the manifest does not define (a typo)
        "file_not_in_manifest",  # a file sent but not listed: read as bulk
        "header_near_column",  # an unknown column close to a known one: kept as extra data
        "header_missing_column",  # an optional column left out: read as empty
        "boolean_normalised",  # TRUE, Yes, Y, 1 for true
        "enum_normalised",  # another letter case of a known value
        "value_derived",  # a value the export left out, derived from another one
        "row_trailing_delimiters",  # empty values beyond the last column: ignored
        "date_normalised",  # a date in another form whose meaning is certain (8/24/2021)
    }
)


@dataclass(frozen=True)
class Finding:
    """One problem: where it is, what it is, and a sentence saying how to fix it.

    fatal = nothing applied; error = the row is skipped; warning = applied as is.
    `line` is the physical line in the file (header = 1). `outcome`: the words of the
    message that say what became of the data ("its values are kept as extra data"); a
    format that refuses the upload for this finding says that instead.
    """

    severity: str
    code: str
    message: str
    file: str = ""
    line: int | None = None
    column: str = ""
    value: str = ""
    outcome: str = ""

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        del found["outcome"]
        return found


class Failure(Exception):
    """Raised by a stage that cannot go on; carries the fatal finding."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


class FindingLog:
    """Collects findings, keeping the first KEEP_PER_KIND of a kind and counting the rest."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self._kinds: Counter[tuple[str, str, str]] = Counter()
        self._severity: dict[tuple[str, str, str], str] = {}  # of each kind, for summaries
        # The format's refusals: code -> files (() = any), and the format's name for messages.
        self.fatal_codes: dict[str, tuple[str, ...]] = {}
        self.format_title = ""
        # The district takes files only as the specification writes them (TOLERATED).
        self.strict = False

    def _escalated(self, finding: Finding) -> Finding:
        """A finding the format, or a strict district, treats as fatal, saying so."""
        if finding.severity == FATAL:
            return finding
        files = self.fatal_codes.get(finding.code)
        if self.strict and finding.code in TOLERATED:
            refused = (
                "this district takes files only as the specification writes them (strict), "
                "so nothing was applied"
            )
        elif files is None or (files and finding.file not in files):
            return finding
        else:
            refused = (
                f"{self.format_title} refuses an upload with this problem, so nothing was applied"
            )
        if finding.outcome and finding.outcome in finding.message:
            message = finding.message.replace(finding.outcome, refused, 1)
        else:
            message = f"{finding.message} {refused}."
        return replace(finding, severity=FATAL, message=message, outcome="")

    def add(self, finding: Finding) -> None:
        finding = self._escalated(finding)
        kind = (finding.file, finding.code, finding.column)
        self._severity.setdefault(kind, finding.severity)
        self._kinds[kind] += 1
        if self._kinds[kind] <= KEEP_PER_KIND:
            self.findings.append(finding)

    def extend(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.add(finding)

    def add_counted(self, samples: list[Finding], total: int) -> None:
        """Record `total` findings of one kind from a few samples (vectorised checks)."""
        if not samples:
            return
        samples = [self._escalated(f) for f in samples]
        first = samples[0]
        kind = (first.file, first.code, first.column)
        self._severity.setdefault(kind, first.severity)
        room = max(KEEP_PER_KIND - self._kinds[kind], 0)
        self.findings.extend(samples[:room])
        self._kinds[kind] += total

    @property
    def fatal(self) -> bool:
        return any(f.severity == FATAL for f in self.findings)

    def summaries(self) -> list[Finding]:
        """One warning per kind that was cut short, saying how many more there were."""
        out = []
        for (file, code, column), n in self._kinds.items():
            if n > KEEP_PER_KIND:
                out.append(
                    Finding(
                        self._severity[(file, code, column)],
                        code,
                        f"{n - KEEP_PER_KIND} more rows have this same problem "
                        f"({n} in all); only the first {KEEP_PER_KIND} are listed.",
                        file=file,
                        column=column,
                    )
                )
        return out

    def all(self) -> list[Finding]:
        return self.findings + self.summaries()
