"""What the pipeline found and decided, handed from stage to stage and to the report."""

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from rosterdrop.ingest.findings import FindingLog
from rosterdrop.ingest.keys import EntityRows
from rosterdrop.ingest.links import LinkValues
from rosterdrop.ingest.plan import Plan
from rosterdrop.ingest.spill import Spill

# Told (file name, rows read so far) while a file is read: the CLI's progress line.
Progress = Callable[[str, int], None]


@dataclass
class Checked:
    """What reading and validating found: the shape `rosterdrop validate --json` prints."""

    format: str = ""
    reason: str = ""
    files: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    log: FindingLog = field(default_factory=FindingLog)
    entities: dict[str, EntityRows] = field(default_factory=dict)
    # After the key checks: per entity _key, _hash, _status, _row of the records kept.
    accepted: dict[str, pl.DataFrame] = field(default_factory=dict)
    spills: dict[str, Spill] = field(default_factory=dict)
    links: LinkValues = field(default_factory=LinkValues)
    progress: Progress | None = field(default=None, repr=False)

    @property
    def fatal(self) -> bool:
        return self.log.fatal

    def as_dict(self) -> dict:
        return {
            "format": self.format,
            "files": self.files,
            "counts": self.counts,
            "issues": [f.as_dict() for f in self.log.all()],
        }


@dataclass
class Outcome:
    status: str
    checked: Checked
    plan: Plan | None = None
    message: str = ""
    # The district's roster token once this outcome is recorded, if the roster is as the
    # plan left it (applied) or found it (no changes).
    roster_token: int | None = None
