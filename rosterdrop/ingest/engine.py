"""The engine: check an upload's files, plan them against the district's roster, apply or hold.

`check` reads and checks an upload without a database (`rosterdrop validate`); `run` also
plans against the district's roster and applies in one transaction, or holds. Both take the
district's `Settings`, resolved once per import, and hand on what they found as `Checked` and
`Outcome` (outcome.py). The sync's life around a run (its uploads, approval, retry) is
syncs.py's.
"""

import contextlib
import functools
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from django.conf import settings as django_settings
from django.db import transaction as django_transaction

from rosterdrop import process
from rosterdrop.districts.models import District
from rosterdrop.feed.events import record_events, refresh_statistics, renamed_in
from rosterdrop.formats import get_format
from rosterdrop.formats.spec import FormatSpec, Mode
from rosterdrop.ingest import gaps, memory
from rosterdrop.ingest.apply import apply_plan
from rosterdrop.ingest.columns import FILE, KEY, LINE, ROW, STATUS
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding, FindingLog
from rosterdrop.ingest.kept import unreadable, withheld
from rosterdrop.ingest.keys import EntityRows, RosterKeys, check_keys
from rosterdrop.ingest.lines import LineFiles
from rosterdrop.ingest.links import check_links
from rosterdrop.ingest.match import match
from rosterdrop.ingest.models import Change, Sync
from rosterdrop.ingest.outcome import Checked, Outcome, Records
from rosterdrop.ingest.plan import EntityPlan, Plan, plan_entity
from rosterdrop.ingest.reader import Progress, Reader, limits
from rosterdrop.ingest.report import forget_findings, record_in
from rosterdrop.ingest.rollover import starts_school_year
from rosterdrop.ingest.spill import Fingerprinting, SpillFolder
from rosterdrop.ingest.unpack import unpack
from rosterdrop.ingest.vouched import carried, context
from rosterdrop.roster import hashes, store, wal
from rosterdrop.roster.schema import LABELS

APPLIED = ("applied", "applied_with_errors")
# The upload's bounds (zip limits): past them nothing more of it is read.
BOUNDS = frozenset({"zip_too_large", "zip_ratio"})


@dataclass(frozen=True)
class Settings:
    """How one import reads a district's files, resolved once as it starts: every file and
    stage reads with the same format spec (a custom template saved meanwhile counts from the
    next import), and the import's digest and vouching context are made of that same spec."""

    format: FormatSpec | None = None  # None: recognised from the files (rosterdrop validate)
    account: str = ""  # the receiving district's slug: manifests and custom templates name it
    fallback_encoding: str = "cp1252"
    strict: bool = False  # what real exports get wrong refuses the upload (findings.TOLERATED)

    @classmethod
    def of(
        cls,
        district: District,
        format_slug: str | None = None,
        encoding: str | None = None,
        strict: bool = False,
    ) -> "Settings":
        """A district's settings, the given ones over its own; raises ValueError for a format
        that does not exist."""
        spec = get_format(format_slug or district.format, district.slug)
        fallback = district.fallback_encoding if encoding is None else encoding
        return cls(spec, district.slug, fallback, strict or district.strict)

    @classmethod
    def named(
        cls,
        format_slug: str | None,
        account: str = "",
        fallback_encoding: str = "cp1252",
        strict: bool = False,
    ) -> "Settings":
        """Settings for files checked on their own (`rosterdrop validate` without a
        district): a format by its slug, or None to recognise it from the files."""
        spec = get_format(format_slug, account) if format_slug else None
        return cls(spec, account, fallback_encoding, strict)

    def context(self, district_id: int) -> str:
        """What decides how a row is read and checked (ingest/vouched.py)."""
        return context(district_id, self.fallback_encoding, self.format)


@dataclass(frozen=True)
class Against:
    """The roster an upload is checked against (none, for files checked on their own).

    `known`: its active keys per entity, for references to records not sent now;
    `keys`: its keys by position, for the records the spill matched with it;
    `spill`: where record data goes, with the roster's fingerprints (what need not go);
    `vouched`: the entities whose records it vouches for (ingest/vouched.py);
    `lines`: the lines of the files that made it, and those this read keeps (ingest/lines.py).
    """

    known: Mapping[str, pl.Series]
    keys: RosterKeys | None = None
    spill: SpillFolder | None = None
    vouched: frozenset[str] = frozenset()
    lines: LineFiles | None = None


NOTHING = Against(known={})


def check(
    paths: list[Path],
    settings: Settings,
    against: Against = NOTHING,
    progress: Progress | None = None,
) -> Checked:
    """Unpack, match, read each file (reader.py), then check keys and references across them.

    `progress`: told (file name, rows read so far) after every batch.
    """
    log = FindingLog()
    log.strict = settings.strict
    reader = Reader(
        log, settings.fallback_encoding, against.spill, against.vouched, progress, against.lines
    )
    fmt, reason, failed = None, "", False
    try:
        members = unpack(paths, limits(), log)
        matched = match(members, settings.format, log, settings.account)
        fmt, reason = matched.format, matched.reason
        for file, member, mode in matched.files:
            try:
                reader.read_file(matched.format, file, member, mode)
            except Failure as failure:
                if failure.finding.code in BOUNDS:
                    raise
                # This file cannot be read on: said, and the other files are read all the
                # same, so that every problem of the upload is told at once.
                log.add(failure.finding)
        check_links(reader.links, log)
    except Failure as failure:
        log.add(failure.finding)
        failed = True
    finally:
        reader.close()
    files, slug = tuple(reader.files), fmt.slug if fmt else ""
    if fmt is None or failed or log.fatal:
        records = Records(reader.entities, spills=reader.spills)
        return Checked(slug, reason, files, log=log, records=records)
    _withhold_removals(log, reader.entities)
    accepted = check_keys(
        reader.entities, against.known, log, fmt.references, against.keys, fmt.how_to_send
    )
    # What the gaps need of the references, taken before they go: only a sync to a roster
    # that holds records counts its gaps from what it changes.
    kept_out = gaps.upload_keeps_out(reader.entities, accepted) if len(against.known) else {}
    for rows in reader.entities.values():
        rows.release()
    counts = {e: int((frame[STATUS] == "active").sum()) for e, frame in accepted.items()}
    records = Records(reader.entities, accepted, reader.spills, kept_out)
    return Checked(slug, reason, files, counts, log, records)


class ActiveKeys(Mapping[str, pl.Series]):
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

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot().ranges)

    def __len__(self) -> int:
        return len(self._snapshot().ranges)


def run(
    paths: list[Path],
    district: District,
    sync: Sync,
    settings: Settings,
    *,
    approved: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    digests: dict[str, str] | None = None,
) -> Outcome:
    """Check, plan against the roster, then apply (or hold) -- the whole import. `digests`:
    the sha256 of the files sent as they are, by name (ingest/lines.py)."""
    work = process.mkdtemp("spill-", tmp_dir())
    try:
        token = store.roster_token(district.pk)
        snapshot = hashes.Snapshot(district.pk, token)
        now, vouched = settings.context(district.pk), snapshot.vouched
        lines = LineFiles(district.pk, token, now, work / "lines", digests or {})
        staged, stale, applying, events = None, set[str](), False, 0
        try:
            with contextlib.ExitStack() as transaction:
                loader = None
                if _loads_while_reading(paths, snapshot, dry_run):
                    # One transaction from before the read to the commit: its records are copied
                    # into their tables while the files are read (store.Loader).
                    conn = transaction.enter_context(store.bulk_connection())
                    loader = store.Loader(conn, district.pk, sync.pk, ROW)
                    transaction.callback(loader.close)  # before the transaction ends, always
                against = Against(
                    ActiveKeys(lambda: snapshot),
                    snapshot.keys,
                    # Its fingerprints are dropped once the files are read.
                    SpillFolder(work, Fingerprinting(snapshot.frame(keys=False)), loader),
                    frozenset(e for e, then in vouched.items() if then == now),
                    lines,
                )
                checked = check(paths, settings, against, progress)
                loaded = loader.finish() if loader is not None else {}
                if checked.fatal:
                    _roll_back(loader)
                    return Outcome("failed", checked, message=_first_fatal(checked))
                # The roster's snapshot is read an entity at a time for the plan, and a batch at a
                # time for the new one, which is written before apply: during apply, at the memory
                # peak, neither snapshot nor the accepted records are held.
                memory.release()
                if loader is None:
                    conn = transaction.enter_context(store.bulk_connection())
                plan = _plan(checked, snapshot.entities())
                status, message = _decide(plan, district, checked, approved)
                applying = status in APPLIED and not dry_run
                # What the roster vouches for once this sync is recorded (it checked the rows
                # it read), should it be applied or find nothing changed.
                modes = {e: rows.mode for e, rows in checked.records.entities.items()}
                refused = frozenset(
                    e for e, rows in checked.records.entities.items() if rows.refused_held
                )
                vouched = carried(vouched, modes, now, refused)
                if not applying:
                    _roll_back(loader)
                else:
                    try:
                        planned, token = token, store.claim_roster(conn, district.pk, token)
                    except store.RosterChanged:
                        _roll_back(loader)
                        return _roster_changed(checked, plan)
                    staged = _stage_snapshot(snapshot, plan, checked.records, loaded)
                    forget_findings(sync.pk)  # a held sync's, when approved
                    spills = checked.records.spills
                    kept_out = checked.records.kept_out
                    counted = gaps.before(conn, district.pk, planned, plan, spills, kept_out)
                    applied = apply_plan(
                        conn, plan, spills, district.pk, sync.pk, gaps.named(counted), loaded
                    )
                    stale = store.stale_statistics(*plan.growth, applied.analyzed)
                    gaps.applied(district.pk, sync.pk, token, counted, applied, stale)
                    events = record_events(
                        conn, district.pk, sync.pk, renamed_in(plan), Change, applied.created
                    )
                    process.checkpoint("apply")
                    record_in(conn, sync, Outcome(status, checked, plan, message, token))
                    # Its pages are copied into the database file by the build after the
                    # sync, not in the commit the district waits for (roster/wal.py).
                    wal.later(conn)
        except BaseException:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise
        finally:
            # SQLite gives its page cache back to malloc as the transaction ends (up to
            # REWRITE_CACHE_KB): a worker would otherwise keep it resident until its next import.
            memory.release()
        if applying:
            process.checkpoint("committed")
        if staged is not None:  # the roster it describes is committed
            hashes.publish(district.pk, token, staged, vouched)
            lines.publish(token)
        if applying:
            store.refresh_statistics(stale)
            refresh_statistics(events)
        unchanged = status == "no_changes" and not dry_run
        if unchanged:
            hashes.vouch(district.pk, token, vouched)
            lines.publish(token)
        return Outcome(status, checked, plan, message, token if applying or unchanged else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# A first import on PostgreSQL copies its records while it reads (store.Loader) when its files
# are at least this big: below, a plain apply after the read costs little, and writes its
# records in key order.
LOAD_WHILE_READING_BYTES = 64 << 20


def _loads_while_reading(paths: list[Path], snapshot: hashes.Snapshot, dry_run: bool) -> bool:
    """Whether an import copies its records while it reads: PostgreSQL, a real import, into a
    district with no records yet, files big enough (LOAD_WHILE_READING_BYTES)."""
    if dry_run or not store.loads_while_reading() or snapshot.ranges:
        return False
    return sum(path.stat().st_size for path in paths) >= LOAD_WHILE_READING_BYTES


def _roll_back(loader: store.Loader | None) -> None:
    """What a Loader copied goes: the import's transaction rolls back as it closes (it wrote
    nothing else yet)."""
    if loader is not None:
        loader.close()
        django_transaction.set_rollback(True)


def tmp_dir() -> Path:
    """The data folder's own temporary folder (spills, uploads being linked or checked)."""
    path = django_settings.DATA_DIR / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def _stage_snapshot(
    planned_against: hashes.Snapshot,
    plan: Plan,
    records: Records,
    loaded: dict[str, store.Loaded],
) -> Path:
    """Write the roster's snapshot as the plan leaves it (to publish once applied), then let
    go of the accepted records: apply needs only the plan and the spills. The row IDs of the
    new records a store.Loader copied are known (`loaded`), others' not before apply."""
    added = {e: copied.ids(plan.entities[e].added.to_numpy()) for e, copied in loaded.items()}
    new = plan.applied_to(planned_against.parts(), records.accepted, added)
    staged = hashes.stage(planned_against.district_id, new)
    records.release()
    memory.release()
    return staged


def _withhold_removals(log: FindingLog, entities: dict[str, EntityRows]) -> None:
    """A full file with a line that could not be read (findings.UNREADABLE) removes nothing of
    what it fills (ingest/kept.py): those records stay, and references to them resolve."""
    for file, line in unreadable(log.findings).items():
        for rows in entities.values():
            if file in rows.columns and rows.mode == Mode.BULK:
                rows.kept.unread[file] = min(line, rows.kept.unread.get(file, line))


def _plan(checked: Checked, roster: Iterator[tuple[str, hashes.Records]]) -> Plan:
    """Plan each entity sent against the roster's records of it, read one entity at a time."""
    records = checked.records

    def plan(entity: str, current: hashes.Records) -> EntityPlan:
        rows = records.entities[entity]
        return plan_entity(entity, rows.mode, records.accepted[entity], current, rows.kept)

    planned = {e: plan(e, current) for e, current in roster if e in records.accepted}
    for entity in records.accepted.keys() - planned.keys():  # none in the roster yet
        planned[entity] = plan(entity, hashes.none())
    result = Plan({entity: planned[entity] for entity in records.accepted})
    _report_kept(result, checked)
    _report_unknown(result, checked)
    return result


def _report_kept(plan: Plan, checked: Checked) -> None:
    """Say which records stay as they were although their full file left them out, and why."""
    entities = checked.records.entities
    withheld_by: dict[str, int] = {}
    for entity, ep in plan.entities.items():
        rows = entities[entity]
        for file in rows.kept.unread:
            withheld_by[file] = withheld_by.get(file, 0) + len(ep.kept)
        column = functools.partial(rows.column, name="sourcedId")
        for samples, total in rows.kept.findings(entity, ep.kept, column):
            checked.log.add_counted(samples, total)
    lines = {f: line for rows in entities.values() for f, line in rows.kept.unread.items()}
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
        rows = checked.records.entities[entity]
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


def _percent(share: float) -> str:
    """0.005 as "0.5%", 1/79 as "1.27%": a threshold below 1% is not "0%"."""
    return f"{share * 100:.3g}%"


def _decide(plan: Plan, district: District, checked: Checked, approved: bool) -> tuple[str, str]:
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
            f"This sync would remove {worst.guarded_removals} of {worst.active_before} "
            f"{worst.entity} ({_percent(worst.removal_share)}), more than the "
            f"{_percent(threshold)} allowed; it waits for approval."
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
