"""The pipeline, stage after stage, the same from SFTP, the web page and the command line.

`check` reads and validates an upload without a database (`rosterdrop validate`); `run`
also plans against the district's roster and applies in one transaction, or holds.
"""

import errno
import functools
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
from django.conf import settings

from rosterdrop import notify, process
from rosterdrop.feed.events import record_events, renamed_in
from rosterdrop.formats.spec import FormatSpec, Mode
from rosterdrop.inbox.store import check_quota, fetch, receive
from rosterdrop.ingest import gaps, issue_rows, memory, resent, states
from rosterdrop.ingest.apply import apply_plan
from rosterdrop.ingest.claims import claim_uploads
from rosterdrop.ingest.columns import FILE, KEY, LINE, NATURAL, ROW, SAME, STATUS
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding
from rosterdrop.ingest.kept import unreadable, withheld
from rosterdrop.ingest.keys import EntityRows, RosterKeys, check_keys
from rosterdrop.ingest.links import check_links, gather
from rosterdrop.ingest.mapping import (
    extra_columns,
    key_columns,
    key_prefix,
    key_sources,
    map_batch,
    message_columns,
    natural_key,
)
from rosterdrop.ingest.match import match
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.outcome import Checked, Outcome, Progress
from rosterdrop.ingest.plan import Plan, plan_entity
from rosterdrop.ingest.read import read_table
from rosterdrop.ingest.report import forget_findings, record, record_in
from rosterdrop.ingest.rollover import starts_school_year
from rosterdrop.ingest.spill import Fingerprinting, SpillFolder
from rosterdrop.ingest.unpack import Limits, unpack
from rosterdrop.ingest.validate import RowChecker, check_header, faulty, unreadable_id
from rosterdrop.ingest.vouched import carried, context, vouchable
from rosterdrop.roster import hashes, store
from rosterdrop.roster.schema import LABELS
from rosterdrop.timing import timed

log = logging.getLogger(__name__)
APPLIED = ("applied", "applied_with_errors")
# The upload's bounds (zip limits): past them nothing more of it is read.
BOUNDS = frozenset({"zip_too_large", "zip_ratio"})


def limits() -> Limits:
    return Limits(settings.ZIP_MAX_MEMBERS, settings.ZIP_MAX_TOTAL_BYTES, settings.ZIP_MAX_RATIO)


def expand(path: Path) -> list[Path]:
    """A folder stands for the files in it (not those of its subfolders, nor hidden ones)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())
    return [path]


def check(
    paths: list[Path],
    format_slug: str | None = None,
    fallback_encoding: str = "cp1252",
    spill: SpillFolder | None = None,
    known: Mapping[str, pl.Series] | None = None,
    account: str = "",
    progress: Progress | None = None,
    roster_keys: RosterKeys | None = None,
    vouched: frozenset[str] = frozenset(),
    strict: bool = False,
) -> Checked:
    """Unpack, match, decode, read, map and validate; spill record data if told where.

    `known`: active keys of the current roster, for references to records not sent now;
    `roster_keys`: its keys by position, for records the spill matched with it; `vouched`:
    the entities whose records the roster vouches for (ingest/vouched.py).
    `account`: the receiving district's slug (manifests naming a district, custom templates).
    `progress`: called with (file name, rows read so far) after every batch.
    `strict`: what real exports get wrong refuses the upload (findings.TOLERATED).
    """
    result = Checked(progress=progress)
    result.log.strict = strict
    refs = None
    try:
        members = unpack(paths, limits(), result.log)
        matched = match(members, format_slug, result.log, account)
        refs = matched.format.references
        result.format, result.reason = matched.format.slug, matched.reason
        for file, member, mode in matched.files:
            try:
                read_file(
                    result, matched.format, file, member, mode, fallback_encoding, spill, vouched
                )
            except Failure as failure:
                if failure.finding.code in BOUNDS:
                    raise
                # This file cannot be read on: said, and the other files are read all the
                # same, so that every problem of the upload is told at once.
                result.log.add(failure.finding)
        check_links(result.links, result.log)
    except Failure as failure:
        result.log.add(failure.finding)
        return result
    finally:
        _close_spills(result)
    if not result.fatal:
        _withhold_removals(result)
        # Not `known or {}`: asking a lazy mapping for its length would read it.
        known = {} if known is None else known
        result.accepted = check_keys(
            result.entities, known, result.log, refs, roster_keys, matched.format.how_to_send
        )
        for rows in result.entities.values():
            rows.release()
        result.counts = {
            e: int((frame[STATUS] == "active").sum()) for e, frame in result.accepted.items()
        }
    return result


@timed("read_file")
def read_file(
    result: Checked,
    fmt: FormatSpec,
    file,
    member,
    mode: Mode,
    fallback: str,
    spill,
    vouched: frozenset[str] = frozenset(),
) -> None:
    """Read one file of an upload into `result`: decoded, its header checked, its rows checked
    and mapped to records (spilled to disk when `spill` is given), every issue in `result.log`.
    `check` reads each file of an upload with it; a custom template's sample test one file."""
    with member.open() as stream:
        decoded = decode(stream, file.name, file.dialect.encoding or fallback)
        table = read_table(
            file.name, decoded.chunks, file.dialect.delimiters, file.dialect.escapechar
        )
        if not check_header(file, table.header, fmt.header_order, result.log):
            table.batches.close()
            return
        checker = RowChecker(file, table.header, mode, result.log)
        extras = extra_columns(file, table.header)
        for output in file.outputs:  # a file with no rows fills its entities all the same
            _rows_of(result, file, output, mode, spill)
        vouching = (
            spill is not None
            and vouchable(fmt, file, mode, checker.checked_columns, extras)
            and file.outputs[0].entity in vouched
        )
        # Closed here, whatever happens: batches are read ahead from this open stream.
        with closing(table.batches):
            for batch in table.batches:
                if vouching:
                    _read_vouched(result, file, mode, checker, batch, extras, spill)
                else:
                    batch = checker.check(batch)
                    gather(result.links, fmt, file, batch)
                    for output in file.outputs:
                        mapped = map_batch(file, output, batch, extras)
                        _keep(result, file, output, mode, mapped, spill)
                    _keep_skipped(result, file, mode, checker, extras)
                if result.progress:
                    result.progress(file.name, checker.rows)
        checker.finish()
        result.log.extend(decoded.findings)
        result.log.extend(table.findings)
        result.files.append({"name": file.name, "rows": checker.rows, "encoding": decoded.encoding})


def _read_vouched(result: Checked, file, mode, checker, batch, extras, spill) -> None:
    """A batch of a file the roster vouches for: mapped first, and only the rows whose
    records the roster does not hold as they are are checked (then mapped again, fixed)."""
    [output] = file.outputs
    batch = checker.prepare(batch)
    mapped = map_batch(file, output, batch, extras)
    same = _spill_of(result, output.entity, spill).match(mapped)
    held = None if same is None else same.is_not_null() & (mapped[STATUS] == "active")
    if held is None or not held.any():
        mapped = map_batch(file, output, checker.check_prepared(batch), extras)
    elif held.all():  # the usual nightly batch: nothing to check
        mapped = mapped.with_columns(same)
        checker.rejected = batch.clear()
    else:
        rest = map_batch(file, output, checker.check_prepared(batch.filter(~held)), extras)
        mapped = pl.concat(
            [mapped.filter(held).with_columns(same.filter(held)), rest], how="diagonal"
        ).sort(LINE)
    _keep(result, file, output, mode, mapped, spill)
    _keep_skipped(result, file, mode, checker, extras)


def _rows_of(result: Checked, file, output, mode, spill) -> EntityRows:
    """The records of an output's entity, from every file that fills it."""
    rows = result.entities.setdefault(
        output.entity, EntityRows(output.entity, mode, derived=output.derived)
    )
    rows.columns.setdefault(file.name, message_columns(output))
    shape = (output.key_space, key_columns(output))
    if shape not in rows.keys.setdefault(file.name, []):
        rows.keys[file.name].append(shape)
    if spill is not None:
        _spill_of(result, output.entity, spill)
    return rows


def _keep(result: Checked, file, output, mode, mapped: pl.DataFrame, spill) -> None:
    """Spill a mapped batch's record data and keep its keys for the checks across rows."""
    rows = _rows_of(result, file, output, mode, spill)
    if spill is not None:
        same = _spill_of(result, output.entity, spill).write(mapped)
        if same is not None:
            mapped = mapped.with_columns(same)
    rows.add(_with_natural_key(output, mapped), file.name, output.derived)


def _keep_skipped(result: Checked, file, mode, checker: RowChecker, extras) -> None:
    """The keys of the rows the checks just skipped: a reference to one of them is told why,
    and in a full file the roster keeps their records as they were (ingest/kept.py)."""
    if not checker.rejected.height:
        return
    for output in file.outputs:
        keys = map_batch(file, output, checker.rejected, extras).select(KEY, LINE)
        _rows_of(result, file, output, mode, None).add_skipped(keys, file.name)
    if mode == Mode.BULK:
        _keep_rejected(result, file, checker.rejected, extras)


def _keep_rejected(result: Checked, file, rejected: pl.DataFrame, extras: list[str]) -> None:
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
        kept = result.entities[output.entity].kept
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
            unread = result.entities[output.entity].kept.unread
            unread.setdefault(file.name, int(cast(int, unknown.min())))


def _with_natural_key(output, mapped: pl.DataFrame) -> pl.DataFrame:
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


def _spill_of(result: Checked, entity: str, spill: SpillFolder):
    if entity not in result.spills:
        result.spills[entity] = spill.open(entity)
    return result.spills[entity]


def _close_spills(result: Checked) -> None:
    for spill in result.spills.values():
        spill.close()


class ActiveKeys(Mapping):
    """The roster's active keys per entity, for references to records not sent now.

    Read from the roster's snapshot only when asked, an entity at a time: an upload that
    sends every entity it refers to never asks, and then the snapshot is not even opened.
    """

    def __init__(self, snapshot: Callable[[], hashes.Snapshot]):
        self._snapshot = functools.cache(snapshot)
        self._cache: dict[str, pl.Series] = {}

    def __getitem__(self, entity: str) -> pl.Series:
        if entity not in self._snapshot().ranges:
            raise KeyError(entity)
        if entity not in self._cache:
            self._cache[entity] = self._snapshot().active_keys(entity)
        return self._cache[entity]

    def __iter__(self):
        return iter(self._snapshot().ranges)

    def __len__(self) -> int:
        return len(self._snapshot().ranges)


def run(
    paths: list[Path],
    district,
    sync,
    *,
    approved: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Outcome:
    """Check, plan against the roster, then apply (or hold) -- the whole import."""
    work = process.mkdtemp("spill-", tmp_dir())
    try:
        token = store.roster_token(district.pk)
        snapshot = hashes.Snapshot(district.pk, token)
        now, vouched = context(district), snapshot.vouched
        checked = check(
            paths,
            district.format,
            district.fallback_encoding,
            # Its fingerprints are dropped once the files are read.
            SpillFolder(work, Fingerprinting(snapshot.frame(keys=False))),
            ActiveKeys(lambda: snapshot),
            district.slug,
            progress,
            snapshot.keys,
            frozenset(e for e, then in vouched.items() if then == now),
            district.strict,
        )
        if checked.fatal:
            return Outcome("failed", checked, message=_first_fatal(checked))
        # The roster's snapshot is read an entity at a time for the plan, and a batch at a time
        # for the new one, which is written before apply: during apply, at the memory peak,
        # neither snapshot nor the accepted records are held.
        memory.release()
        staged = None
        try:
            with store.bulk_connection() as conn:
                plan = _plan(checked, snapshot.entities())
                status, message = _decide(plan, district, checked, approved)
                applying = status in APPLIED and not dry_run
                # What the roster vouches for once this sync is recorded (it checked the rows
                # it read), should it be applied or find nothing changed.
                modes = {e: rows.mode for e, rows in checked.entities.items()}
                vouched = carried(vouched, modes, now)
                if applying:
                    try:
                        token = store.claim_roster(conn, district.pk, token)
                    except store.RosterChanged:
                        return _roster_changed(checked, plan)
                    staged = _stage_snapshot(snapshot, plan, checked)
                    forget_findings(sync.pk)  # a held sync's, when approved
                    apply_plan(conn, plan, checked.spills, district.pk, sync.pk)
                    gaps.count(district.pk, sync.pk)
                    record_events(conn, district.pk, sync.pk, renamed_in(plan))
                    process.checkpoint("apply")
                    record_in(conn, sync, Outcome(status, checked, plan, message, token))
        except BaseException:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        if staged is not None:  # the roster it describes is committed
            hashes.publish(district.pk, token, staged, vouched)
        if applying:
            store.refresh_statistics(*plan.growth)
        unchanged = status == "no_changes" and not dry_run
        if unchanged:
            hashes.vouch(district.pk, token, vouched)
        return Outcome(status, checked, plan, message, token if applying or unchanged else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _roster_changed(checked: Checked, plan: Plan) -> Outcome:
    checked.log.add(
        Finding(
            FATAL,
            "roster_changed",
            "Another sync changed this district's roster while this one was being checked; "
            "nothing was applied. Import the files again.",
        )
    )
    return Outcome("failed", checked, plan, "The roster changed meanwhile.")


def _stage_snapshot(planned_against: hashes.Snapshot, plan: Plan, checked: Checked) -> Path:
    """Write the roster's snapshot as the plan leaves it (to publish once applied), then let
    go of the accepted records: apply needs only the plan and the spills."""
    new = plan.applied_to(planned_against.parts(), checked.accepted)
    staged = hashes.stage(planned_against.district_id, new)
    checked.accepted.clear()
    checked.entities.clear()
    memory.release()
    return staged


def _withhold_removals(checked: Checked) -> None:
    """A full file with a line that could not be read (findings.UNREADABLE) removes nothing of
    what it fills (ingest/kept.py): those records stay, and references to them resolve."""
    for file, line in unreadable(checked.log.findings).items():
        for rows in checked.entities.values():
            if file in rows.columns and rows.mode == Mode.BULK:
                rows.kept.unread[file] = min(line, rows.kept.unread.get(file, line))


def _plan(checked: Checked, roster: Iterator[tuple[str, hashes.Records]]) -> Plan:
    """Plan each entity sent against the roster's records of it, read one entity at a time."""

    def plan(entity: str, current: hashes.Records):
        rows = checked.entities[entity]
        return plan_entity(entity, rows.mode, checked.accepted[entity], current, rows.kept)

    planned = {e: plan(e, current) for e, current in roster if e in checked.accepted}
    for entity in checked.accepted.keys() - planned.keys():  # none in the roster yet
        planned[entity] = plan(entity, hashes.none())
    result = Plan({entity: planned[entity] for entity in checked.accepted})
    _report_kept(result, checked)
    _report_unknown(result, checked)
    return result


def _report_kept(plan: Plan, checked: Checked) -> None:
    """Say which records stay as they were although their full file left them out, and why."""
    withheld_by: dict[str, int] = {}
    for entity, ep in plan.entities.items():
        rows = checked.entities[entity]
        for file in rows.kept.unread:
            withheld_by[file] = withheld_by.get(file, 0) + len(ep.kept)
        column = functools.partial(rows.column, name="sourcedId")
        for samples, total in rows.kept.findings(entity, ep.kept, column):
            checked.log.add_counted(samples, total)
    lines = {f: line for rows in checked.entities.values() for f, line in rows.kept.unread.items()}
    for file, removals in withheld_by.items():
        if removals:
            checked.log.add(withheld(file, lines[file], removals))


def _report_unknown(plan: Plan, checked: Checked) -> None:
    """Warn of each delta row marking tobedeleted a record the roster does not have: nothing
    to remove, likely a wrong ID. One warning a line: the records a line makes after the
    first (a user's roles) share it."""
    told: set[tuple[str, int]] = set()
    for entity, ep in plan.entities.items():  # in dependency order: users before their roles
        if not len(ep.unknown):
            continue
        rows = checked.entities[entity]
        named = rows.deletions.filter(pl.col(ROW).is_in(ep.unknown.implode()))
        label = LABELS[entity]
        for key, file, line in named.select(KEY, pl.col(FILE).cast(pl.String), LINE).iter_rows():
            if (file, line) in told:
                continue
            told.add((file, line))
            value, words = rows.shown(file, key)
            checked.log.add(
                Finding(
                    WARNING,
                    "delete_not_in_roster",
                    f"This row marks the {label} with {words} tobedeleted, but the roster has "
                    f"no such {label}: nothing was removed. Check the ID: only a record an "
                    "earlier sync added can be deleted.",
                    file,
                    line,
                    rows.column(file, "sourcedId"),
                    value,
                )
            )


def _decide(plan: Plan, district, checked: Checked, approved: bool) -> tuple[str, str]:
    if not approved and (rollover := starts_school_year(plan, checked, district)):
        plan.rollover = rollover
        return "held", (
            f"This upload starts the {rollover['school_year']} school year: a term rollover "
            "waits for approval. See below what it ends and starts."
        )
    threshold = district.effective_removal_threshold
    over = plan.over_threshold(threshold)
    if over and not approved:
        worst = max(over, key=lambda p: p.removal_share)
        return "held", (
            f"This sync would remove {len(worst.removed)} of {worst.active_before} "
            f"{worst.entity} ({worst.removal_share:.0%}), more than the "
            f"{threshold:.0%} allowed; it waits for approval."
        )
    errors = any(f.severity == ERROR for f in checked.log.findings)
    skipped = " Rows with errors were skipped; the roster keeps their records as they were."
    if not plan.has_changes:
        return "no_changes", "Nothing changed since the last sync." + (skipped if errors else "")
    if errors:
        return "applied_with_errors", "Applied." + skipped
    return "applied", "Applied."


def _first_fatal(checked: Checked) -> str:
    finding: Finding = next(f for f in checked.log.findings if f.severity == "fatal")
    return finding.message


def tmp_dir() -> Path:
    path = settings.DATA_DIR / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def import_uploads(
    district,
    uploads: list,
    *,
    dry_run: bool = False,
    sync=None,
    approved: bool = False,
    progress: Progress | None = None,
):
    """Import stored uploads as one set (a zip, or loose files together) and record the sync.

    `sync`: one already running for them (started by states.start or claimed for approval).
    """
    digest = resent.input_digest(district, uploads)
    if sync is None:
        sync = states.start(district, uploads, dry_run=dry_run, input_digest=digest)
    else:
        Sync.objects.filter(pk=sync.pk).update(input_digest=digest)
        sync.input_digest = digest
    earlier = resent.earlier_sync(district, digest) if not approved else None
    if earlier is not None:
        resent.repeat(sync, earlier)
        return _finish(sync, uploads, "no_changes", sync.message, dry_run)
    work = process.mkdtemp("upload-", tmp_dir())
    try:
        paths = []
        for upload in uploads:
            # Under its name as sent, which is what the format matches on.
            target = work / upload.filename
            fetch(upload, target)
            paths.append(target)
        outcome = run(paths, district, sync, approved=approved, dry_run=dry_run, progress=progress)
        if not dry_run:
            issue_rows.keep(sync, uploads, paths, outcome.checked.log.all(), limits())
    except Exception as exc:
        # Nothing was applied (the transaction rolled back); say so rather than stay "running".
        log.exception("import of sync %s failed", sync.pk)
        outcome = _stopped(sync, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if outcome.status in APPLIED and not dry_run:
        sync.refresh_from_db()
    else:
        record(sync, outcome)
    return _finish(sync, uploads, outcome.status, outcome.message, dry_run)


def _stopped(sync, exc: Exception) -> Outcome:
    """The outcome of an import that raised: a full disk says so and how to retry; anything
    else is an internal error (the details are in the server log)."""
    checked = Checked()
    if disk_full(exc):
        checked.log.add(
            Finding(
                FATAL,
                "disk_full",
                "The server's disk was full during this import, so it stopped; nothing was "
                "applied. Once the operator has freed space it can be imported again: "
                f"`rosterdrop sync retry {sync.pk}` (or Retry on the sync's page).",
            )
        )
        return Outcome("failed", checked, message="The disk was full; nothing was applied.")
    checked.log.add(
        Finding(
            FATAL,
            "internal_error",
            "rosterdrop could not finish this import because of an internal error; nothing "
            "was applied. The operator has the details in the server log.",
        )
    )
    return Outcome("failed", checked, message="Internal error; nothing was applied.")


def disk_full(exc: BaseException | None) -> bool:
    """Whether an error, or one it came from, is a full disk (or quota), as the OS, SQLite,
    Arrow or polars report it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "database or disk is full" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _finish(sync, uploads: list, status: str, message: str, dry_run: bool):
    """Tell whoever is notified, and mark the uploads imported or failed."""
    if not dry_run:
        notify.sync_finished(sync)
        states.settle(uploads, states.upload_outcome(status), message)
    return sync


def import_path(
    district,
    path: Path,
    *,
    dry_run: bool = False,
    login: str = "",
    progress: Progress | None = None,
):
    """`rosterdrop import PATH`: keep the files in the inbox like any upload, then import
    those the format claims, as SFTP and the web page do. None when it claims none: each
    is then recorded as unmatched, with the reason."""
    uploads = claimed(district, receive_path(district, path, login), dry_run)
    if not uploads:
        return None
    return import_uploads(district, uploads, dry_run=dry_run, progress=progress)


def receive_path(district, path: Path, login: str = "") -> list:
    """The files of a path (a zip, a folder, a file) kept in the inbox like any upload; none
    if they do not fit the district's quota (store.QuotaExceeded)."""
    files = expand(path)
    check_quota(district, sum(p.stat().st_size for p in files))
    return [receive(district, p.name, p, "cli", login=login) for p in files]


def claimed(district, uploads: list, dry_run: bool = False) -> list:
    """The uploads the district's format claims (`ingest/claims.py`); the others are recorded
    as unmatched and, unless this is a dry run, mailed."""
    try:
        return claim_uploads(district, uploads, tell=not dry_run).importable
    except ValueError:
        return uploads  # a format that does not exist: the import says so


def approve(sync, who: str = ""):
    """Apply a held sync against the roster as it is now, past the removal guard.

    Raises states.Conflict if it is no longer held (decided by someone else first).
    """
    states.claim_approval(sync, who)
    return apply_approved(sync)


def apply_approved(sync):
    """Run an approval claimed with states.claim_approval. The held sync's issues and
    changes are replaced only when its new outcome is recorded: an approval cut short by a
    crash returns to held with them (ingest.recovery)."""
    return import_uploads(sync.district, list(sync.uploads.all()), sync=sync, approved=True)


def discard(sync, who: str = ""):
    """Raises states.Conflict if it is no longer held."""
    states.move(sync, states.SyncStatus.DISCARDED, decided_by=who)
    return sync


def start_retry(sync):
    """A new running sync that imports the uploads of a failed or interrupted one again
    (a full disk, a crash); raises states.IllegalMove if that cannot be."""
    if sync.status not in states.RETRYABLE or sync.dry_run:
        raise states.IllegalMove(
            f"sync {sync.pk} is {sync.status}; only a failed or interrupted import is retried"
        )
    uploads = list(sync.uploads.all())
    purged = [u.filename for u in uploads if not u.stored_path]
    if not uploads or purged:
        raise states.IllegalMove(
            f"the files of sync {sync.pk} are no longer kept ({', '.join(purged)}); send them again"
        )
    return states.start(sync.district, uploads, retry_of=sync)


def retry(sync):
    """Import a failed or interrupted sync's uploads again, as a new sync."""
    again = start_retry(sync)
    return import_uploads(again.district, list(again.uploads.all()), sync=again)
