"""What the engine found and decided, handed from the checks to the plan, apply and report."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from rosterdrop.ingest.findings import FindingLog
from rosterdrop.ingest.keys import EntityRows
from rosterdrop.ingest.plan import Plan
from rosterdrop.ingest.reader import FileRead
from rosterdrop.ingest.spill import Spill


@dataclass(frozen=True)
class Records:
    """The records an upload's files made, for the plan and apply.

    `entities`: per entity, the keys and references read, what skipped rows keep (kept.py)
    and the delta's deletions; `accepted`: after the key checks, per entity KEY, KEYHASH,
    HASH, STATUS and ROW of the records kept; `spills`: their record data on disk;
    `kept_out`: per gap, the IDs the accepted records keep out of it once applied
    (ingest.gaps.upload_keeps_out).
    """

    entities: dict[str, EntityRows] = field(default_factory=dict)
    accepted: dict[str, pl.DataFrame] = field(default_factory=dict)
    spills: dict[str, Spill] = field(default_factory=dict)
    kept_out: dict[str, pl.Series] = field(default_factory=dict)

    def release(self) -> None:
        """Let go of all but the spills and `kept_out`, once the new snapshot is staged: apply
        needs only the plan and the spills, and the memory peak is during apply."""
        self.accepted.clear()
        self.entities.clear()


@dataclass(frozen=True)
class Checked:
    """What reading and checking an upload found: the shape `rosterdrop validate --json` prints,
    and the records for the plan. `log` is the import's one finding log: the plan adds to it."""

    format: str = ""
    reason: str = ""
    files: tuple[FileRead, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    log: FindingLog = field(default_factory=FindingLog)
    records: Records = field(default_factory=Records, repr=False)

    @property
    def fatal(self) -> bool:
        return self.log.fatal

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "files": [f.as_dict() for f in self.files],
            "counts": dict(self.counts),
            "issues": [f.as_dict() for f in self.log.all()],
        }


@dataclass(frozen=True)
class Outcome:
    status: str
    checked: Checked
    plan: Plan | None = None
    message: str = ""
    # The district's roster token once this outcome is recorded, if the roster is as the
    # plan left it (applied) or found it (no changes).
    roster_token: int | None = None
