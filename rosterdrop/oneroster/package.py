"""A district's roster as a OneRoster 1.2 CSV package (the 1.2.1 binding's columns, manifest
`oneroster.version` 1.2): bulk, or delta since a sync.

The files and columns are those of the OneRoster 1.2 format spec that imports read
(formats/oneroster.py), so an export reads back as it was written. Values are written the way
the binding wants them whatever format the district sent: enumerations as the spec spells them
or as `ext:` terms, booleans as true/false, IDs in the GUID alphabet.
"""

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date
from pathlib import Path
from typing import BinaryIO

import polars as pl
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from rosterdrop.formats.oneroster import NON_ROSTER_FILES_12, ONEROSTER_12
from rosterdrop.formats.spec import Column, FileSpec, Type
from rosterdrop.ingest.models import Change, Sync
from rosterdrop.oneroster.completion import COURSE_PREFIX, SchoolYear, course_for
from rosterdrop.oneroster.objects import FALSE, TRUE, timestamp
from rosterdrop.oneroster.position import HEADER, consistent_read
from rosterdrop.roster.models import MODELS
from rosterdrop.roster.schema import FIELDS

METADATA_PREFIX = "metadata."
ID_ALPHABET = re.compile(r"[0-9A-Za-z.\-_/@]+")
BATCH = 20_000
# Values a required column gets when the district's format has none (documented in README).
DEFAULTS = {"enabledUser": "true", "classType": "scheduled"}


@dataclass(frozen=True)
class Table:
    """One CSV file of the package and the canonical entity it is written from."""

    spec: FileSpec
    entity: str

    @property
    def columns(self) -> list[Column]:
        """The 1.2.1 binding's: the spec's, less those it retired (users.resourceSourcedIds)."""
        return [c for c in self.spec.columns if not c.retired]


TABLES = [Table(f, f.outputs[0].entity) for f in ONEROSTER_12.files]
ALL_FILES = sorted([f.name for f in ONEROSTER_12.files] + list(NON_ROSTER_FILES_12))


def safe_id(value: str) -> str:
    """The ID in the GUID alphabet (letters, digits and . - _ / @): as it is when it already
    is; otherwise (IDs rosterdrop derived as "class:user", say) a stable digest of it."""
    if ID_ALPHABET.fullmatch(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:32]


class Writer:
    """Writes a district's records as the package's files, a whole column at a time (polars),
    completing what a format does not carry but the binding requires (README: the OneRoster
    export)."""

    def __init__(
        self,
        district,
        delta: bool,
        selection: Callable[[str], QuerySet],
        gone: dict[str, dict[str, tuple[str, int]]] | None = None,
    ):
        self.district, self.delta, self.selection = district, delta, selection
        self.gone = gone or {}
        syncs = Sync.objects.filter(district=district)
        syncs = syncs.values_list("pk", "finished_at", "started_at")
        times = {pk: finished or started for pk, finished, started in syncs}
        self.stamps = {pk: timestamp(at) for pk, at in times.items()}
        # The members' time: when the roster last changed (1980, the zip's first, if never).
        last = max(times.values(), default=None)
        self.zip_time = last.astimezone(UTC).timetuple()[:6] if last else (1980, 1, 1, 0, 0, 0)
        orgs = MODELS["orgs"].objects.filter(district=district, status="active").order_by("id")
        self.first_org = orgs.values_list("sourced_id", flat=True).first() or ""
        self.term = SchoolYear.of(date.today())

    def member(self, name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.zip_time)
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    def frame(self, table: Table) -> pl.DataFrame:
        """The file's rows: the records the selection holds, and those made up for them."""
        records = _read(self.selection(table.entity), FIELDS[table.entity])
        if self.gone.get(table.entity):
            records = pl.concat([records, self._renamed_away(table.entity)])
        if table.entity == "enrollments":
            records = records.with_columns(_class_school=self._class_schools(records))
        written = records.select(self._expr(table, c) for c in table.columns)
        written = written.with_columns(_metadata(records["metadata"]))
        for column in table.columns:
            if column.type in (Type.ID, Type.IDS):
                written = written.with_columns(_safe_ids(written[column.name], column.type))
        extra = self.extra_rows(table)
        if extra:
            names = {c.name: pl.String for c in table.columns}
            made = pl.DataFrame(extra, schema=names, orient="row")
            written = pl.concat([written, made], how="diagonal")
        return written

    def _renamed_away(self, entity: str) -> pl.DataFrame:
        """Records under the old IDs they were renamed from, tobedeleted as of the renaming
        sync, with what their record now holds (a row needs its required values)."""
        gone = self.gone[entity]
        now = MODELS[entity].objects.filter(district=self.district)
        current = _read(
            now.filter(sourced_id__in={new for new, _ in gone.values()}), FIELDS[entity]
        )
        olds = pl.DataFrame(
            [(old, new, sync) for old, (new, sync) in gone.items()],
            schema={"_old": pl.String, "sourced_id": pl.String, "_sync": pl.Int64},
            orient="row",
        )
        moved = olds.join(current, on="sourced_id").with_columns(
            sourced_id=pl.col("_old"), status=pl.lit("tobedeleted"), changed_sync_id=pl.col("_sync")
        )
        return moved.select(current.columns)

    def _expr(self, table: Table, column: Column) -> pl.Expr:
        name = column.name
        if name == "sourcedId":
            return pl.col("sourced_id").alias(name)
        if name in ("status", "dateLastModified"):
            if not self.delta:
                return pl.lit(None, pl.String).alias(name)
            if name == "status":
                return pl.col("status")
            stamps = pl.col("changed_sync_id").replace_strict(self.stamps, default=None)
            return stamps.cast(pl.String).alias(name)
        if column.secret or name not in FIELDS[table.entity]:
            return pl.lit(None, pl.String).alias(name)
        value = pl.coalesce(_given(name), *self._instead(table.entity, name))
        value = _typed(column, value)
        if name in DEFAULTS:
            value = value.fill_null(DEFAULTS[name])
        elif column.required and column.extensible:
            value = value.fill_null("ext:unspecified")
        return value.str.replace_all(r"[\r\n]+", " ").alias(name)

    def _instead(self, entity: str, name: str) -> list[pl.Expr]:
        """What stands for a value the record lacks, from what else the roster says."""
        match entity, name:
            case "enrollments", "schoolSourcedId":
                return [pl.col("_class_school")]
            case "users", "username":
                return [_given("email"), _given("identifier"), pl.col("sourced_id")]
            case "users", "familyName":  # one name known: it is both
                return [_given("givenName")]
            case "users", "givenName":
                return [_given("familyName")]
            case "academicSessions", "schoolYear":
                return [_given("endDate").str.slice(0, 4)]
            case "classes", "courseSourcedId":
                return [pl.lit(COURSE_PREFIX) + pl.col("sourced_id")]
            case "classes", "termSourcedIds":
                return [pl.lit(self.term.sourced_id)]
            case "roles", "orgSourcedId":
                return [pl.lit(self.first_org or None, pl.String)]
        return []

    def extra_rows(self, table: Table) -> list[list[str | None]]:
        """Records the binding needs that the roster has not: a course for each class that
        names none (as Clever and ParentSquare send them), a term for classes in none."""
        if table.entity == "courses":
            missing = self.selection("classes").filter(courseSourcedId=None)
            rows = []
            for record in missing.order_by("id"):
                cells = {"title": record.title, "orgSourcedId": safe_id(record.schoolSourcedId)}
                course = safe_id(course_for(record.sourced_id))
                rows.append(self._made(table, course, record, cells))
            return rows
        if table.entity == "academicSessions":
            record = self.selection("classes").filter(termSourcedIds=None).order_by("id").first()
            if record is None:
                return []
            return [self._made(table, self.term.sourced_id, record, self.term.fields)]
        return []

    def _made(self, table: Table, sourced_id: str, like, cells: dict) -> list[str | None]:
        """A made-up record's row, with the status and time of the record it is made for."""
        head = {"sourcedId": sourced_id}
        if self.delta:
            head |= {"status": like.status, "dateLastModified": self.stamps[like.changed_sync_id]}
        return [{**head, **cells}.get(c.name) or None for c in table.columns]

    def _class_schools(self, records: pl.DataFrame) -> pl.Series:
        """SDS and other formats name no school on an enrollment: its class's."""
        wanted = records.filter(pl.col("schoolSourcedId").is_null())["classSourcedId"]
        classes = MODELS["classes"].objects.filter(district=self.district)
        schools = (
            dict(
                classes.filter(sourced_id__in=wanted.unique().to_list()).values_list(
                    "sourced_id", "schoolSourcedId"
                )
            )
            if wanted.len()
            else {}
        )
        return records["classSourcedId"].replace_strict(
            schools, default=None, return_dtype=pl.String
        )


def _given(name: str) -> pl.Expr:
    """A column's value, an empty string being no value."""
    return pl.when(pl.col(name) != "").then(pl.col(name))


def _typed(column: Column, value: pl.Expr) -> pl.Expr:
    match column.type:
        case Type.ENUM:
            known = {v.lower(): v for v in column.values}
            low = value.str.to_lowercase()
            spelled = low.replace_strict(known, default=None, return_dtype=pl.String)
            if not column.extensible:
                return pl.coalesce(spelled, value)
            cleaned = value.str.replace(r"^ext:", "").str.replace_all(r"[^a-zA-Z0-9.\-_]", "")
            ext = pl.when(cleaned != "").then(pl.lit("ext:") + cleaned)
            return pl.when(low.is_in(list(known))).then(spelled).otherwise(ext)
        case Type.BOOLEAN:
            low = value.str.strip_chars().str.to_lowercase()
            return (
                pl.when(low.is_in(TRUE))
                .then(pl.lit("true"))
                .when(low.is_in(FALSE))
                .then(pl.lit("false"))
            )
        case Type.IDS:
            return (
                value.str.split(",")
                .list.eval(pl.element().str.strip_chars())
                .list.eval(pl.element().filter(pl.element() != ""))
                .list.join(",")
                .pipe(lambda e: pl.when(e != "").then(e))
            )
    return value


def _safe_ids(values: pl.Series, kind: Type) -> pl.Series:
    """IDs outside the GUID alphabet as digests (safe_id), a whole column at once."""
    items = values.str.split(",").explode() if kind == Type.IDS else values
    bad = items.filter(~items.str.contains(f"^{ID_ALPHABET.pattern}$")).drop_nulls().unique()
    if not bad.len():
        return values
    mapping = {v: safe_id(v) for v in bad.to_list()}
    if kind == Type.ID:
        return values.replace(mapping)
    fixed = values.str.split(",").list.eval(pl.element().replace(mapping)).list.join(",")
    return fixed.alias(values.name)


def _metadata(found: pl.Series) -> list[pl.Series]:
    """The records' extra source columns, as `metadata.*` columns (sorted, to the right of
    the binding's): a key read from such a column already carries the prefix."""
    keys = sorted({key for text in found.drop_nulls().unique() for key in json.loads(text)})
    if not keys:
        return []
    values = found.str.json_decode(pl.Struct({k: pl.String for k in keys}))
    return [
        values.struct.field(k)
        .str.replace_all(r"[\r\n]+", " ")
        .alias(k if k.startswith(METADATA_PREFIX) else METADATA_PREFIX + k)
        for k in keys
    ]


def _read(records: QuerySet, fields: tuple[str, ...]) -> pl.DataFrame:
    """The records' columns as a frame, fetched in batches by the database cursor."""
    columns = ("sourced_id", "status", "changed_sync_id", *fields, "metadata")
    schema = {c: pl.String for c in columns} | {"changed_sync_id": pl.Int64}
    records = records.order_by().annotate(metadata_text=Cast("metadata", TextField()))
    try:
        sql, params = records.values_list(*columns[:-1], "metadata_text").query.sql_with_params()
    except EmptyResultSet:  # selected by an empty list of syncs: nothing
        return pl.DataFrame(schema=schema)
    parts = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(BATCH):
            parts.append(pl.DataFrame(batch, schema=schema, orient="row"))
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)


def changed_since(district, since: Sync) -> list[int]:
    """The syncs applied after `since`: what they changed is the delta."""
    return list(
        Sync.objects.filter(district=district, finished_at__gt=since.finished_at)
        .exclude(pk=since.pk)
        .values_list("pk", flat=True)
    )


@dataclass(frozen=True)
class Written:
    """What a package holds: the rows of each file, and the feed cursor it stands at (the
    number of the last event whose change it includes; the feed's `after` to follow from)."""

    files: dict[str, int]
    cursor: int


def renamed_away(district, later: list[int]) -> dict[str, dict[str, tuple[str, int]]]:
    """{entity: {old ID: (the ID its record has now, the sync that renamed it)}}: records the
    later syncs moved to a new source ID (ingest's change rows say so, first field sourcedId)
    whose old ID the roster no longer has. A delta deletes those IDs."""
    moves = (
        Change.objects.filter(sync_id__in=later, action="updated", fields__0__field="sourcedId")
        .order_by("id")
        .values_list("entity", "fields__0__before", "sourced_id", "sync_id")
    )
    moved: dict[str, dict[str, tuple[str, int]]] = {}
    for entity, old, new, sync in moves:
        moved.setdefault(entity, {})[old] = (new, sync)
    gone: dict[str, dict[str, tuple[str, int]]] = {}
    for entity, renames in moved.items():
        table = MODELS[entity].objects.filter(district=district, sourced_id__in=list(renames))
        present = set(table.values_list("sourced_id", flat=True))
        for old, (new, sync) in renames.items():
            if old in present:  # the ID came back: its own record is in the delta
                continue
            seen = {old}
            while new in renames and new not in present and new not in seen:  # renamed again
                seen.add(new)
                new = renames[new][0]
            gone.setdefault(entity, {})[old] = (new, sync)
    return gone


def write_package(district, out: BinaryIO, since: Sync | None = None) -> Written:
    """Write the package to `out` (a zip), read in one state of the roster. The zip's
    comment carries the cursor (`X-Roster-Cursor: N`), and every member the time of the
    district's last sync, so that the same roster makes the same bytes."""
    with consistent_read(district) as cursor:
        delta = since is not None
        later = changed_since(district, since) if delta else []

        def selection(entity: str) -> QuerySet:
            records = MODELS[entity].objects.filter(district=district)
            if delta:
                return records.filter(changed_sync_id__in=later)
            return records.filter(status="active")

        writer = Writer(district, delta, selection, renamed_away(district, later))
        written: dict[str, int] = {}
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
            for table in TABLES:
                count = _write_file(package, table, writer)
                if count:
                    written[table.spec.name] = count
            manifest = [["propertyName", "value"], ["manifest.version", "1.0"]]
            manifest.append(["oneroster.version", "1.2"])
            mode = "delta" if delta else "bulk"
            for name in ALL_FILES:
                sent = mode if name in written else "absent"
                manifest.append([f"file.{name.removesuffix('.csv')}", sent])
            manifest += [["source.systemName", "rosterdrop"], ["source.systemCode", district.slug]]
            package.writestr(writer.member("manifest.csv"), _csv(manifest))
            package.comment = f"{HEADER}: {cursor}".encode()
    return Written(written, cursor)


def _write_file(package: zipfile.ZipFile, table: Table, writer: Writer) -> int:
    """Write the file sorted by its (written) sourcedId, only if it has rows: the binding
    permits no empty data file. The order is the bytes' order, whatever the database's
    collation, so that a package read back and written again is the same."""
    frame = writer.frame(table)
    if not frame.height:
        return 0
    with package.open(writer.member(table.spec.name), "w", force_zip64=True) as member:
        frame.sort("sourcedId").write_csv(member, line_terminator="\r\n", quote_style="necessary")
    return frame.height


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def export(district, path: Path, since: Sync | None = None) -> Written:
    """Write the package to a file, atomically (a temporary name, then renamed)."""
    partial = path.with_name(path.name + ".part")
    with partial.open("wb") as out:
        written = write_package(district, out, since)
    partial.replace(path)
    return written
