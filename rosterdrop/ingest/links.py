"""Links between source files that no canonical field carries (ALO's Students.`Teacher ID` =
Staff.`ID`): the values on each side are gathered while the files are read, then compared.

The canonical references (keys.py) cover everything that maps onto the roster; these cover
the format's own cross-file rules on columns kept only as metadata.
"""

from dataclasses import dataclass, field

import polars as pl

from rosterdrop.formats.spec import FileSpec, FormatSpec, Link
from rosterdrop.ingest.columns import LINE
from rosterdrop.ingest.findings import WARNING, Finding, FindingLog

SAMPLES = 100
VALUE = "_value"


@dataclass
class LinkValues:
    """What the links of an upload have seen so far."""

    # link -> (the file's name as sent, frames of _value, _line)
    sources: dict[Link, tuple[str, list[pl.DataFrame]]] = field(default_factory=dict)
    # link -> values of its target column (present once the target file has been read)
    targets: dict[Link, list[pl.Series]] = field(default_factory=dict)


def gather(values: LinkValues, fmt: FormatSpec, file: FileSpec, batch: pl.DataFrame) -> None:
    """Keep the link values of one checked batch: its own links, and targets in it."""
    for link in file.links:
        if link.column in batch.columns:
            rows = batch.select(pl.col(link.column).alias(VALUE), LINE).filter(pl.col(VALUE) != "")
            values.sources.setdefault(link, (file.name, []))[1].append(rows)
    for link in (lk for f in fmt.files for lk in f.links):
        if fmt.claim(file.name).name == link.file:
            found = values.targets.setdefault(link, [])
            if link.target in batch.columns:
                found.append(batch[link.target])


def check_links(values: LinkValues, log: FindingLog) -> None:
    """Report each value that names no row of its target file (if that file was sent)."""
    for link, (file_name, frames) in values.sources.items():
        if link not in values.targets or not frames:
            continue  # the target file was not sent: nothing to compare with
        targets = pl.concat([pl.Series(VALUE, [], pl.String), *values.targets[link]])
        rows = pl.concat(frames)
        missing = rows.filter(~pl.col(VALUE).is_in(targets.implode()))
        log.add_counted(
            [
                Finding(
                    WARNING,
                    "reference_missing",
                    f"{link.column} {value!r} on line {line} does not match any {link.target} "
                    f"in {link.file}; it was kept as sent. Check that it is in {link.file}.",
                    file_name,
                    line,
                    link.column,
                    value,
                    outcome="it was kept as sent",
                )
                for value, line in missing.head(SAMPLES).iter_rows()
            ],
            missing.height,
        )
