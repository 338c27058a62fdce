"""What each import did: the sync, its issues and its record-level changes."""

from typing import Any

from django.db import models

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.roster.models import records


class SyncStatus(models.TextChoices):
    """Where a sync is; every move is made by ingest.states (`move`)."""

    RUNNING = "running", "Running"
    APPLIED = "applied", "Applied"
    APPLIED_WITH_ERRORS = "applied_with_errors", "Applied with errors"
    HELD = "held", "Held for approval"
    NO_CHANGES = "no_changes", "No changes"
    FAILED = "failed", "Failed"
    DISCARDED = "discarded", "Discarded"
    INTERRUPTED = "interrupted", "Interrupted"


class IndexState(models.TextChoices):
    """Where the SIS search index of a sync's uploads is (ingest.index_builds): built after
    the sync's outcome is recorded, off the import's path; every move by ingest.states."""

    WANTED = "wanted", "Wanted"  # once the sync has an outcome (never for a dry run)
    BUILDING = "building", "Building"
    AGAIN = "again", "Building again"  # after a build whose process died
    BUILT = "built", "Built"  # or tried: a file it could not index is read by the page


class Sync(models.Model):
    Status = SyncStatus  # every write goes through ingest.states

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="syncs")
    uploads = models.ManyToManyField(Upload, related_name="syncs", blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    format = models.CharField(max_length=40, blank=True)
    dry_run = models.BooleanField(default=False)
    files = models.JSONField(default=list, help_text='[{"name", "rows", "encoding"}]')
    changes = models.JSONField(default=dict, help_text="{entity: {added, updated, ...}}")
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rollover = models.JSONField(
        null=True,
        blank=True,
        help_text="What a term rollover ends and starts, when this sync starts a new school "
        "year (ingest/rollover.py); it is held for approval.",
    )
    decided_by = models.CharField(
        max_length=150, blank=True, help_text="Who approved or discarded."
    )
    # What lets a re-sent upload be recognised (ingest.resent): a digest of the input, and
    # the district's roster token as this sync left it (applied or found unchanged).
    input_digest = models.CharField(max_length=64, blank=True, db_index=True)
    roster_token = models.BigIntegerField(null=True, blank=True)
    # The process running it (rosterdrop.process), to tell a crashed import from a live one.
    runner = models.CharField(max_length=80, blank=True)
    # Renewed by its process while it runs (ingest.states.beat): how a process on another
    # host, whose pid cannot be checked, is known to be dead.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The failed or interrupted sync this one imports again.",
    )
    index = models.CharField(
        max_length=10, choices=IndexState.choices, default=IndexState.WANTED, db_index=True
    )

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"sync {self.pk} ({self.status})"


class Issue(models.Model):
    class Severity(models.TextChoices):
        FATAL = "fatal"
        ERROR = "error"
        WARNING = "warning"

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="issues")
    severity = models.CharField(max_length=8, choices=Severity.choices)
    code = models.CharField(max_length=50)
    file = models.CharField(max_length=255, blank=True)
    line = models.PositiveIntegerField(null=True, blank=True)
    column = models.CharField(max_length=255, blank=True)
    value = models.TextField(blank=True)
    message = models.TextField()

    class Meta:
        ordering = ["id"]


class Change(models.Model):
    """A record updated, removed or reactivated by a sync (added ones are found by first_seen)."""

    class Action(models.TextChoices):
        UPDATED = "updated"
        REMOVED = "removed"
        REACTIVATED = "reactivated"

    # No constraint in the database, nor an index of its own (change_records starts with it):
    # a sync writes its change rows in bulk, in its own transaction, and PostgreSQL checked the
    # deferred constraint row by row at the commit (a 1% change at `huge`, 174k rows: ~1 s of
    # the server's CPU, the commit's most; bench/README.md, pg1pct24). Deleted with their sync
    # by Django (on_delete), as roster records are with their district.
    sync = models.ForeignKey(
        Sync,
        on_delete=models.CASCADE,
        related_name="record_changes",
        db_constraint=False,
        db_index=False,
    )
    entity = models.CharField(max_length=20)
    sourced_id = models.CharField(max_length=255)
    action = models.CharField(max_length=12, choices=Action.choices)
    fields = models.JSONField(default=list, help_text='[{"field", "before", "after"}]')
    # The row IDs of the roster record changed (of the entity's table), and of a renamed one's
    # old ID left removed under it (store.rename_records): what a sync changed, read in a
    # range of the index below (changed_by). None on a held sync's preview of its removals.
    record_id = models.BigIntegerField(null=True)
    left_record_id = models.BigIntegerField(null=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # "why is X": the history of one ID, among every change of every sync.
            models.Index(fields=["sourced_id"], name="change_sourced_id"),
            models.Index(fields=["sync", "entity", "record_id"], name="change_records"),
            models.Index(
                fields=["sync", "entity", "left_record_id"],
                name="change_left_records",
                condition=models.Q(left_record_id__isnull=False),
            ),
        ]


# Syncs whose apply changed the roster: only these stamp records (changed_sync_id).
APPLIED = (SyncStatus.APPLIED, SyncStatus.APPLIED_WITH_ERRORS)


def changed_by(district_id: int, entity: str, syncs: list[int]) -> models.Q:
    """Which records of `entity` the given syncs changed last (their changed_sync_id is one of
    them: a dateLastModified filter, a delta).

    No index of a roster table holds changed_sync_id, so that PostgreSQL updates a record in
    place (roster.models.LOOKUPS): a walk of the district would test every record. The
    records are found from what the syncs recorded instead (`_touched`). A record a later
    sync changed again is not the earlier one's: unless the syncs are every one since a
    moment (`_since_a_moment`), each record's changed_sync_id is tested as well.
    """
    touched = models.Q(id__in=_touched(district_id, entity, syncs))
    if _since_a_moment(district_id, syncs):
        return touched
    return touched & models.Q(changed_sync_id__in=syncs)


def changed_ids(district_id: int, entity: str, syncs: list[int], most: int) -> list[int] | None:
    """The row IDs, in order, of the records of `entity` the given syncs changed last, read
    from their change rows and the `_first_seen` index alone (no record read), when the
    syncs are every one since a moment (a `dateLastModified>` filter) and they touched at
    most `most` records; else None."""
    if not _since_a_moment(district_id, syncs):
        return None
    found = list(_touched(district_id, entity, syncs).values_list("id", flat=True)[: most + 1])
    return sorted(set(found)) if len(found) <= most else None


def _since_a_moment(district_id: int, syncs: list[int]) -> bool:
    """Whether no applied sync but the given ones finished after the first of them: then a
    record they touched was last changed by one of them, since a district's syncs apply one
    at a time and each finishes after the one before (ingest.report.record_in)."""
    applied = Sync.objects.filter(district_id=district_id, status__in=APPLIED)
    first = applied.filter(pk__in=syncs).order_by("finished_at").values_list("finished_at")[:1]
    if not first:
        return True  # none applied: they changed nothing, and touched nothing
    return not applied.exclude(pk__in=syncs).filter(finished_at__gte=first[0][0]).exists()


def _touched(district_id: int, entity: str, syncs: list[int]) -> models.QuerySet[Any]:
    """The row IDs (`id`, some more than once) of the records of `entity` the given syncs
    touched, each an index range: those they added (first_seen_sync_id), those their change
    rows name (record_id) and the old IDs of those they renamed (left removed under them:
    left_record_id). Any applied sync's; a held one's change rows name no record."""
    recorded = Change.objects.filter(sync_id__in=syncs, entity=entity).order_by()
    return (
        records(district_id, entity)
        .filter(first_seen_sync_id__in=syncs)
        .values("id")
        .union(
            recorded.filter(record_id__isnull=False).values("record_id"),
            recorded.filter(left_record_id__isnull=False).values("left_record_id"),
            all=True,
        )
    )


def with_sync_times(records: models.QuerySet[Any]) -> models.QuerySet[Any]:
    """Roster records with `first_seen_at` and `changed_at`: when the syncs that first wrote
    and last changed them finished (kept once per sync, not on every record)."""

    def finished(field: str) -> models.Subquery:
        return models.Subquery(
            Sync.objects.filter(pk=models.OuterRef(field)).values("finished_at")[:1]
        )

    annotated: models.QuerySet[Any] = records.annotate(
        first_seen_at=finished("first_seen_sync_id"), changed_at=finished("changed_sync_id")
    )
    return annotated


class RosterGaps(models.Model):
    """A district's roster gaps as the last applied sync left them (ingest.gaps): counts, and
    the first IDs of each, in ID order."""

    district = models.OneToOneField(
        District, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    # The sync that counted them (None: counted on first view, for a roster older than this).
    sync_id = models.BigIntegerField(null=True)
    # The roster token (roster.RosterToken) of the roster they describe: the next sync counts
    # from what it changes only if it applies to that very roster (None: counted before
    # tokens were kept).
    token = models.BigIntegerField(null=True)
    # Every ID of each gap of at most ingest.gaps.KNOWN records, in no order: the next sync
    # then knows which of its candidates were in the gap without looking them up.
    known = models.JSONField(default=dict, help_text="{gap: [sourced ID, ...]}")
    counts = models.JSONField(default=dict, help_text="{gap: number of records}")
    shown = models.JSONField(default=dict, help_text="{gap: [sourced ID, ...]}")


class IssueRow(models.Model):
    """A row an issue of the sync is on, as the district sent it (ingest.issue_rows)."""

    sync = models.ForeignKey(Sync, on_delete=models.CASCADE, related_name="issue_rows")
    # The upload it was read from: retention deletes it with the upload's bytes.
    upload = models.ForeignKey(Upload, null=True, on_delete=models.CASCADE, related_name="+")
    file = models.CharField(max_length=255)
    line = models.PositiveIntegerField()
    header = models.JSONField(default=list)
    cells = models.JSONField(default=list)

    @property
    def row(self) -> dict[str, str]:
        return dict(zip(self.header, self.cells, strict=False))


class HeldSummary(models.Model):
    """What a held sync would remove, in a data manager's words (ingest.hold_summary)."""

    sync = models.OneToOneField(Sync, on_delete=models.CASCADE, primary_key=True, related_name="+")
    lines = models.JSONField(default=list, help_text='[{"count", "what", "grades", "schools"}]')


class SentFile(models.Model):
    """A file of an upload, indexed when it was imported (ingest.sent_index) so that SIS
    search reads the rows it finds by byte offset instead of the whole file."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="+")
    # The bytes it was built from: a re-sent upload of the same bytes finds it again.
    sha256 = models.CharField(max_length=64)
    name = models.CharField(max_length=255, help_text="The CSV file (a zip's member) as sent.")
    rows = models.PositiveIntegerField(help_text="Rows after the header.")
    header_end = models.BigIntegerField(help_text="Where the header row ends (its bytes).")
    # A file that names no one (enrollments.csv) keeps its IDs as values and keys instead.
    row_terms = models.BooleanField(
        default=True, help_text="Its blocks keep each row's searched cells."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["district", "sha256", "name"], name="sent_file_unique")
        ]


class SentBlock(models.Model):
    """BLOCK consecutive rows of a SentFile: where each starts (physical line, byte offset),
    and the casefolded ID and name cells searched."""

    file = models.ForeignKey(SentFile, on_delete=models.CASCADE, related_name="blocks")
    first = models.PositiveIntegerField(help_text="Its first row's number (0: line 2's row).")
    lines = models.BinaryField(help_text="int64 first line of each row")
    offsets = models.BinaryField(help_text="int64 byte offset of each row, and the end")
    terms = models.TextField(help_text="A line per row: its searched cells, 0x1f between")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["file", "first"], name="sent_block_unique")]


class SentValues(models.Model):
    """Distinct values of a SentFile's reference columns (the user, class and school IDs of
    enrollments.csv), VALUES of them, each with the rows it is in: a search scans 731k
    values, not 15M cells (5M enrollments at 4 IDs each were 740 MB per search)."""

    file = models.ForeignKey(SentFile, on_delete=models.CASCADE, related_name="values")
    first = models.PositiveIntegerField(help_text="Its first value's number.")
    terms = models.TextField(help_text="A line per value, casefolded")
    rows = models.BinaryField(help_text="int32 rows each value is in, ascending, value by value")
    ends = models.BinaryField(help_text="int32 end of each value's rows in `rows`")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["file", "first"], name="sent_values_unique")]


class SentKeys(models.Model):
    """Rows' own IDs in a SentFile that names no one (each enrollment's sourcedId), casefolded
    and in byte order, KEYS of them, each with its row: a search finds an ID whole or from its
    start through the index on `first`, instead of scanning 5M unique IDs (185 MB at 5M
    enrollments, 0.3-0.5 s per request)."""

    # Its index is the one below (file, first).
    file = models.ForeignKey(
        SentFile, on_delete=models.CASCADE, related_name="keys", db_index=False
    )
    first = models.BinaryField(help_text="Its first value, UTF-8 (at most its first 64 bytes)")
    terms = models.TextField(help_text="A line per value, casefolded, in byte order")
    rows = models.BinaryField(help_text="int32 row of each value")

    class Meta:
        indexes = [models.Index(fields=["file", "first"], name="sent_keys_first")]
