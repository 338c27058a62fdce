"""The reader: one file of an upload -> checked, mapped records, batch by batch.

A `Reader` reads the files of one upload, one `read_file` at a time: each is decoded, its
header checked, its rows checked (validate) and mapped to the records of each entity it feeds
(mapping), their record data spilled to disk when given a spill folder (spill.py), their keys
and references kept for the checks across rows and files (keys.py), every issue in its log.
The engine reads every file of an upload with one (engine.check); the custom templates'
wizard reads a sample file with one (custom/templates.try_sample).
"""

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import polars as pl
from django.conf import settings

from rosterdrop.formats.spec import FileSpec, FormatSpec, Mode, Output
from rosterdrop.ingest.columns import (
    KEY,
    LINE,
    LINECHECK,
    LINEHASH,
    NATURAL,
    RECORD,
    SAME,
    STATUS,
)
from rosterdrop.ingest.decode import Decoded, decode
from rosterdrop.ingest.findings import FindingLog
from rosterdrop.ingest.keys import EntityRows
from rosterdrop.ingest.lines import SENT_STATUS, CheckedLines, FileLines, Layout, LineFiles
from rosterdrop.ingest.links import LinkValues, gather
from rosterdrop.ingest.mapping import (
    extra_columns,
    key_columns,
    key_prefix,
    key_sources,
    map_batch,
    message_columns,
    natural_key,
)
from rosterdrop.ingest.read import Batch, FoundLines, Table, frames, read_table
from rosterdrop.ingest.spill import Spill, SpillFolder
from rosterdrop.ingest.unpack import Limits, Member
from rosterdrop.ingest.validate import RowChecker, check_header, faulty, unreadable_id
from rosterdrop.ingest.vouched import vouchable
from rosterdrop.timing import timed

# Told (file name, rows read so far) while a file is read: the CLI's progress line.
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class FileRead:
    """A file as it was read: its name as sent, its rows and the encoding it was read in."""

    name: str
    rows: int
    encoding: str

    def as_dict(self) -> dict[str, str | int]:
        return {"name": self.name, "rows": self.rows, "encoding": self.encoding}


def limits() -> Limits:
    """The bounds of an upload's zip (members, bytes, ratio): past them nothing more is read."""
    return Limits(settings.ZIP_MAX_MEMBERS, settings.ZIP_MAX_TOTAL_BYTES, settings.ZIP_MAX_RATIO)


def expand(path: Path) -> list[Path]:
    """A folder stands for the files in it (not those of its subfolders, nor hidden ones)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


class Reader:
    """The files of one upload read so far: their records by entity, their spills, the values
    of the format's links between files, and what was found, in `log`.

    `fallback`: the encoding of a file that is not UTF-8 and whose format names none;
    `spill`: where record data goes (None: nothing is spilled, as for a sample file);
    `vouched`: the entities whose records the roster vouches for (ingest/vouched.py);
    `lines`: the lines the last sync's files kept, and those this read keeps (ingest/lines.py).
    """

    def __init__(
        self,
        log: FindingLog,
        fallback: str = "cp1252",
        spill: SpillFolder | None = None,
        vouched: frozenset[str] = frozenset(),
        progress: Progress | None = None,
        lines: LineFiles | None = None,
    ) -> None:
        self.log, self.fallback, self.spill = log, fallback, spill
        self.vouched, self.progress, self.lines = vouched, progress, lines
        self.entities: dict[str, EntityRows] = {}
        self.spills: dict[str, Spill] = {}
        self.links = LinkValues()
        self.files: list[FileRead] = []

    @timed("read_file")
    def read_file(self, fmt: FormatSpec, file: FileSpec, member: Member, mode: Mode) -> None:
        """Read one file: decoded, its header checked, its rows checked and mapped to records
        (spilled to disk when there is a spill folder), every issue in the log."""
        with member.open() as stream:
            decoded, table = self._table(file, stream)
            if not check_header(file, table.header, fmt.header_order, self.log):
                table.batches.close()
                return
            checker = RowChecker(file, table.header, mode, self.log)
            extras = extra_columns(file, table.header)
            for output in file.outputs:  # a file with no rows fills its entities all the same
                self._rows_of(file, output, mode)
            vouching = self.spill is not None and self._vouched(fmt, file, mode, checker, extras)
            # Kept only by reads the roster vouches for: a first import pays nothing for them
            # (mapping every row before its checks too cost it +1.4 s CPU in 35 at `large`);
            # a build after the sync keeps them (`keep_lines`).
            lines = None
            if vouching and not checker.derived:
                lines = self._lines_of(file, table, decoded.encoding, member)
            # Closed here, whatever happens: batches are read ahead from this open stream.
            with closing(table.batches):
                # A file sent again as it was: its kept lines are its rows (lines.Whole), or
                # its checked records (lines.Checked: a file feeding several entities).
                whole = lines.whole() if lines is not None else None
                if whole is not None:
                    self._take_whole(file, mode, checker, whole)
                taken = whole is not None or (
                    not vouching
                    and self._take_checked(fmt, file, mode, checker, table, decoded, member)
                )
                for batch in table.batches if not taken else ():
                    if vouching:
                        self._read_vouched(file, mode, checker, batch, extras, lines)
                    elif isinstance(batch, FoundLines):  # lines found: table.known's
                        assert isinstance(table.known, CheckedLines)
                        self._read_found(file, mode, checker, batch, extras, table.known)
                    else:
                        checked = checker.check(_hashes(checker, batch)[0])
                        gather(self.links, fmt, file, checked)
                        for output in file.outputs:
                            mapped = map_batch(file, output, checked, extras)
                            self._keep(file, output, mode, mapped)
                        self._keep_skipped(file, mode, checker, extras)
                    if self.progress:
                        self.progress(file.name, checker.rows)
            checker.finish()
            self.log.extend(decoded.findings)
            self.log.extend(table.findings)
            self.files.append(FileRead(file.name, checker.rows, decoded.encoding))
            if lines is not None:
                lines.close(checker.rows, decoded.encoding, decoded.findings + table.findings)

    @timed("keep lines")
    def keep_lines(self, fmt: FormatSpec, file: FileSpec, member: Member, mode: Mode) -> None:
        """Keep a file's lines for the next read as a read the roster vouches for keeps them
        (each line mapped before its checks), reading nothing else, unless its lines are kept
        already: after a sync whose read kept none (ingest/line_builds.py)."""
        assert self.lines is not None
        with member.open() as stream:
            decoded, table = self._table(file, stream)
            with closing(table.batches):
                if not check_header(file, table.header, fmt.header_order, self.log):
                    return
                checker = RowChecker(file, table.header, mode, self.log)
                extras = extra_columns(file, table.header)
                if _checked_whole(fmt, file, mode) and not checker.derived:
                    self._keep_checked(file, table, decoded, member, mode)
                    return
                if not self._vouched(fmt, file, mode, checker, extras) or checker.derived:
                    return
                lines = self._lines_of(file, table, decoded.encoding, member, taking=False)
                if lines is None:
                    return
                [output] = file.outputs
                try:
                    for batch in frames(table):  # `anew`: no lines to find
                        batch, hashes, sent_status = _hashes(checker, batch)
                        if hashes is not None:
                            mapped = map_batch(file, output, checker.prepare(batch), extras)
                            lines.keep(mapped.hstack(hashes), sent_status)
                except BaseException:
                    lines.discard()
                    raise
                lines.close(checker.rows, decoded.encoding, decoded.findings + table.findings)

    def _keep_checked(
        self, file: FileSpec, table: Table, decoded: Decoded, member: Member, mode: Mode
    ) -> None:
        """Keep a file's checked records for the next read (lines.Checked) as its rows are
        checked (on a log of their own: this is not the sync's read). Rows checked each alone
        (`_by_line`): the records and lines of those the checks told nothing about, active, are
        kept, the others read (and told) again by the next read (lines.CheckedLines), which
        takes the file whole only if every row was such. Else: kept only if every row was."""
        assert self.lines is not None
        layout, digest = self._layout(file, table, decoded.encoding, member)
        entities = [output.entity for output in file.outputs]
        by_line = _by_line(file)
        records = self.lines.checked_anew(layout, entities, digest, mode, by_line)
        if records is None:
            return
        table.hash_lines = by_line
        checker = RowChecker(file, table.header, mode, FindingLog(), told=True)
        extras = extra_columns(file, table.header)
        try:
            for batch in frames(table):
                batch, hashes, sent_status = _hashes(checker, batch)
                with_status = 0 if sent_status is None else int(sent_status.sum())
                checked = checker.check(batch)
                told = checker.told_lines().cast(checked[LINE].dtype).implode()
                clean = checked.filter((pl.col(STATUS) == "active") & ~pl.col(LINE).is_in(told))
                if clean.height < batch.height and not by_line:
                    records.discard()
                    return
                mapped = [map_batch(file, output, clean, extras) for output in file.outputs]
                lines = None
                if hashes is not None:
                    sent = pl.lit(False) if sent_status is None else sent_status
                    lines = hashes.with_columns(batch[LINE], sent.alias(SENT_STATUS))
                    if clean.height < batch.height:
                        lines = lines.filter(pl.col(LINE).is_in(clean[LINE].implode()))
                records.keep(mapped, with_status, lines, batch.height - clean.height)
        except BaseException:
            records.discard()
            raise
        records.close(checker.rows, decoded.encoding, decoded.findings + table.findings)

    def _take_checked(
        self,
        fmt: FormatSpec,
        file: FileSpec,
        mode: Mode,
        checker: RowChecker,
        table: Table,
        decoded: Decoded,
        member: Member,
    ) -> bool:
        """A file feeding several entities sent again as it was, its checked records all held
        by the roster as they are (lines.Checked), taken whole: each output's records go to
        the checks across rows as one frame, none spilled; no line of it is read. False: it
        is read, line by line if its lines were kept with their checked records (the table
        then finds them: lines.CheckedLines), else in full."""
        if self.lines is None or self.spill is None or checker.derived:
            return False
        if not _checked_whole(fmt, file, mode):
            return False
        layout, digest = self._layout(file, table, decoded.encoding, member)
        spills = [self._spill_of(output.entity) for output in file.outputs]
        taken = self.lines.checked(layout, spills, digest, mode)
        if taken is None:
            if _by_line(file):
                table.known = self.lines.checked_lines(layout, spills, mode)
                table.hash_lines = table.known is not None
            return False
        stamp, records = taken
        checker.taken(stamp.rows, stamp.with_status)
        for output, frame in zip(file.outputs, records, strict=True):
            self._keep(file, output, mode, frame)
        if self.progress:
            self.progress(file.name, checker.rows)
        return True

    def _table(self, file: FileSpec, stream: BinaryIO) -> tuple[Decoded, Table]:
        """A file's bytes decoded (its own encoding, else the district's fallback) and cut into
        its header and batches of rows, as its dialect says."""
        dialect = file.dialect
        assert dialect is not None  # a FormatSpec gives each of its files a dialect
        decoded = decode(stream, file.name, dialect.encoding or self.fallback)
        table = read_table(file.name, decoded.chunks, dialect.delimiters, dialect.escapechar)
        return decoded, table

    def _vouched(
        self, fmt: FormatSpec, file: FileSpec, mode: Mode, checker: RowChecker, extras: list[str]
    ) -> bool:
        """Whether the roster vouches for the file's rows (ingest/vouched.py). A file that makes
        no records is never vouchable: asked first, before its first output's entity."""
        if not vouchable(fmt, file, mode, checker.checked_columns, extras):
            return False
        return file.outputs[0].entity in self.vouched

    def _lines_of(
        self, file: FileSpec, table: Table, encoding: str, member: Member, taking: bool = True
    ) -> FileLines | None:
        """A file whose rows the roster vouches for is read line by line, its lines kept for
        the next read; those its last read kept are taken as they were if the roster holds
        their records as they are (ingest/lines.py). Not `taking`: the lines are only kept,
        and not at all (None) if they are kept already."""
        output = file.outputs[0]
        if self.lines is None or output.explode or output.unpivot:
            return None
        layout, digest = self._layout(file, table, encoding, member)
        if not taking:
            lines = self.lines.anew(layout, output.entity, digest)
        else:
            lines = self.lines.open(layout, output.entity, self._spill_of(output.entity), digest)
        if lines is None:
            return None
        table.hash_lines, table.known = True, lines.last
        return lines

    def _layout(
        self, file: FileSpec, table: Table, encoding: str, member: Member
    ) -> tuple[Layout, str | None]:
        """What a file's kept lines or records are kept under: its layout, and the digest of
        its bytes as received (None for a member of a package: not received alone)."""
        assert self.lines is not None
        layout = self.lines.layout(file.name, table.header, table.delimiter, encoding)
        return layout, None if member.package else self.lines.digests.get(member.name)

    def close(self) -> None:
        """Close the spills: their record data stays on disk for the plan and apply."""
        for spill in self.spills.values():
            spill.close()

    def _take_whole(
        self, file: FileSpec, mode: Mode, checker: RowChecker, taken: pl.DataFrame
    ) -> None:
        """A file taken whole (lines.Whole): its records, every one held by the roster as it
        is (SAME), go to the checks across rows as one frame, none spilled; no line of it is
        read, found or gathered."""
        [output] = file.outputs
        checker.taken(taken.height, int(taken[SENT_STATUS].sum()))
        self._keep(file, output, mode, taken)
        if self.progress:
            self.progress(file.name, checker.rows)

    def _read_found(
        self,
        file: FileSpec,
        mode: Mode,
        checker: RowChecker,
        batch: FoundLines,
        extras: list[str],
        known: CheckedLines,
    ) -> None:
        """A batch of a file feeding several entities read line by line: the found lines'
        records, every one held by the roster as it is, taken as they were kept (none
        spilled), the other rows checked and mapped as a full read checks them; each output's
        records of both in line order, a line's in their own order (lines.CheckedLines)."""
        taken = known.rows(batch.found)
        checker.taken(batch.found.height, known.with_status(batch.found))
        if batch.parsed is None:  # the usual nightly batch: no line read anew
            for output, records in zip(file.outputs, taken, strict=True):
                self._keep(file, output, mode, records)
            return
        checked = checker.check(_hashes(checker, batch.parsed)[0])
        for output, records in zip(file.outputs, taken, strict=True):
            self._keep(file, output, mode, map_batch(file, output, checked, extras), records)
        self._keep_skipped(file, mode, checker, extras)

    def _read_vouched(
        self,
        file: FileSpec,
        mode: Mode,
        checker: RowChecker,
        batch: Batch,
        extras: list[str],
        lines: FileLines | None,
    ) -> None:
        """A batch of a file the roster vouches for: mapped first, and only the rows whose
        records the roster does not hold as they are are checked (then mapped again, fixed).
        The lines the last read kept come as those records already (ingest/lines.py)."""
        [output] = file.outputs
        known = None
        if isinstance(batch, FoundLines):
            assert lines is not None and lines.last is not None  # who asked for them
            known = lines.last.rows(batch.found)
            checker.taken(known.height, int(known[SENT_STATUS].sum()))
            lines.keep_found(known)
            known = known.drop(LINEHASH, LINECHECK)
            if batch.parsed is None:  # the usual nightly batch: no line read anew
                checker.rejected = known.clear()
                self._keep(file, output, mode, known)
                return
            batch = batch.parsed
        batch, hashes, sent_status = _hashes(checker, batch)
        batch = checker.prepare(batch)
        mapped = map_batch(file, output, batch, extras)
        if lines is not None and hashes is not None:
            lines.keep(mapped.hstack(hashes), sent_status)
        same = self._spill_of(output.entity).match(mapped)
        held = None if same is None else same.is_not_null() & (mapped[STATUS] == "active")
        if same is None or held is None or not held.any():
            mapped = map_batch(file, output, checker.check_prepared(batch), extras)
        elif held.all():  # the usual nightly batch: nothing to check
            mapped = mapped.with_columns(same)
            checker.rejected = batch.clear()
        else:
            rest = map_batch(file, output, checker.check_prepared(batch.filter(~held)), extras)
            mapped = pl.concat(
                [mapped.filter(held).with_columns(same.filter(held)), rest], how="diagonal"
            ).sort(LINE)
        self._keep(file, output, mode, mapped, known)
        self._keep_skipped(file, mode, checker, extras)

    def _rows_of(
        self, file: FileSpec, output: Output, mode: Mode, spilled: bool = True
    ) -> EntityRows:
        """The records of an output's entity, from every file that fills it."""
        rows = self.entities.setdefault(
            output.entity, EntityRows(output.entity, mode, derived=output.derived)
        )
        rows.columns.setdefault(file.name, message_columns(output))
        shape = (output.key_space, key_columns(output))
        if shape not in rows.keys.setdefault(file.name, []):
            rows.keys[file.name].append(shape)
        if spilled and self.spill is not None:
            self._spill_of(output.entity)
        return rows

    def _keep(
        self,
        file: FileSpec,
        output: Output,
        mode: Mode,
        mapped: pl.DataFrame,
        taken: pl.DataFrame | None = None,
    ) -> None:
        """Spill a mapped batch's record data and keep its keys for the checks across rows.

        `taken`: the records of the batch's other lines, taken as their last read mapped them
        (ingest/lines.py): never spilled, kept with the mapped ones in line order. Merged once
        the mapped ones' data (RECORD) is spilled: not a column of nulls for each of them.
        """
        rows = self._rows_of(file, output, mode)
        order = places = None
        if taken is not None:
            order, places = _merged(mapped[LINE].to_numpy(), taken[LINE].to_numpy())
        if self.spill is not None:
            numbered = mapped.height if taken is None else mapped.height + taken.height
            same = self._spill_of(output.entity).write(mapped, places, numbered)
            if same is not None:
                mapped = mapped.with_columns(same)
        mapped = _with_natural_key(output, mapped)
        if taken is not None and order is not None:
            refs = [c for c in mapped.columns if not c.startswith("_")]
            mapped = mapped.drop(RECORD).with_columns(pl.col(refs).cast(pl.Categorical))
            mapped = pl.concat([mapped, taken], how="diagonal_relaxed")[order]
        rows.add(mapped, file.name, output.derived)

    def _keep_skipped(
        self, file: FileSpec, mode: Mode, checker: RowChecker, extras: list[str]
    ) -> None:
        """The keys of the rows the checks just skipped: a reference to one of them is told
        why, and in a full file the roster keeps their records as they were (ingest/kept.py)."""
        if not checker.rejected.height:
            return
        for output in file.outputs:
            mapped = map_batch(file, output, checker.rejected, extras)
            rows = self._rows_of(file, output, mode, spilled=False)
            rows.add_skipped(mapped.select(KEY, LINE), file.name)
            if self.spill is not None and not rows.refused_held:
                same = self._spill_of(output.entity).match(mapped)
                rows.refused_held = same is not None and bool(same.is_not_null().any())
        if mode == Mode.BULK:
            self._keep_rejected(file, checker.rejected, extras)

    def _keep_rejected(self, file: FileSpec, rejected: pl.DataFrame, extras: list[str]) -> None:
        """The records that skipped rows of a full file name keep what the roster holds: mapped
        as sent, spaces around values aside, for their keys; the records made from a row's list
        items also by the row's own key (a prefix of theirs). A row whose own ID cannot be read
        might be any record: its file removes nothing. Nor does it remove any record made from
        other columns of a row skipped for one of those columns' values (Clever's course, keyed
        by its school, of a section without one): that record's key is not known."""
        # An ID sent with spaces around it still names its record.
        rejected = rejected.with_columns(pl.col(pl.String).str.strip_chars())
        present = set(rejected.columns)
        primary = file.outputs[0]
        unknown = rejected.filter(unreadable_id(primary.key, present))[LINE]
        for output in file.outputs:
            kept = self.entities[output.entity].kept
            keys = map_batch(file, output, rejected, extras).select(KEY, LINE)
            kept.add(keys, file.name)
            if output is primary:
                continue
            if output.key[: len(primary.key)] == primary.key:
                prefixes = rejected.select(key_prefix(primary.key, present).alias(KEY), LINE)
                kept.add(prefixes, file.name, prefix=True)
                continue
            lost = rejected.filter(faulty(key_sources(file, output, present), present))[LINE]
            if len(lost) and not len(unknown):
                kept.unread.setdefault(file.name, int(cast(int, lost.min())))
        if len(unknown):
            for output in file.outputs:
                unread = self.entities[output.entity].kept.unread
                unread.setdefault(file.name, int(cast(int, unknown.min())))

    def _spill_of(self, entity: str) -> Spill:
        assert self.spill is not None
        if entity not in self.spills:
            self.spills[entity] = self.spill.open(entity)
        return self.spills[entity]


def _checked_whole(fmt: FormatSpec, file: FileSpec, mode: Mode) -> bool:
    """Whether a file is kept as its checked records, to be taken whole when sent again as it
    was (lines.Checked): a full file feeding several entities, which the roster cannot vouch
    for record by record (vouched.vouchable), in a format whose files do not share values
    with each other (links: gathered from every row read)."""
    if mode != Mode.BULK or len(file.outputs) < 2:
        return False
    return not any(f.links for f in fmt.files)


def _by_line(file: FileSpec) -> bool:
    """Whether a file kept as its checked records (`_checked_whole`) is kept with its lines'
    hashes, to be read line by line when sent in other bytes (lines.CheckedLines): its rows'
    checks look at each row alone (no unique column), so a line checks the same wherever it
    is and whatever lines are around it."""
    return not file.unique


def _merged(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order that puts two frames' rows, each in line order (`first`'s then `second`'s,
    their line numbers), in line order together, and where each of `first`'s rows goes: a
    line's rows stay one after the other in their order (a user's roles, from one line of
    users.csv), which a sort need not keep."""
    if np.all(first[1:] >= first[:-1]) and np.all(second[1:] >= second[:-1]):
        places = np.arange(len(first)) + np.searchsorted(second, first, "left")
        theirs = np.arange(len(second)) + np.searchsorted(first, second, "right")
        order = np.empty(len(first) + len(second), dtype=np.int64)
        order[places] = np.arange(len(first))
        order[theirs] = np.arange(len(first), len(order))
        return order, places
    order = np.argsort(np.concatenate([first, second]), kind="stable")
    places = np.empty_like(order)
    places[order] = np.arange(len(order))
    return order, places[: len(first)]


def _hashes(
    checker: RowChecker, batch: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame | None, pl.Series | None]:
    """A batch without its lines' hashes, the hashes (None: its lines were not hashed) and
    which rows say a status (None: the file has no status column), which a bulk file counts."""
    sent = batch[checker.status_column] != "" if checker.status_column else None
    if LINEHASH not in batch.columns:
        return batch, None, sent
    return batch.drop(LINEHASH, LINECHECK), batch.select(LINEHASH, LINECHECK), sent


def _with_natural_key(output: Output, mapped: pl.DataFrame) -> pl.DataFrame:
    """The natural key's hash, for the records the roster does not hold as they are (SAME):
    only records to write are ever paired by it (5M enrollments: ~0.3 s otherwise)."""
    natural = natural_key(output)
    if natural is None:
        return mapped
    if SAME not in mapped.columns:
        return mapped.with_columns(natural)
    at = np.flatnonzero(mapped[SAME].is_null().to_numpy())
    values = pl.repeat(None, mapped.height, dtype=pl.Int64, eager=True).alias(NATURAL)
    if len(at):
        values = values.scatter(at, mapped[at].select(natural).to_series())
    return mapped.with_columns(values)
