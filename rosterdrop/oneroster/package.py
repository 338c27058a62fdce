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
import itertools
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO

import polars as pl
from django.db.models import QuerySet

from rosterdrop.formats.oneroster import NON_ROSTER_FILES_12, ONEROSTER_12
from rosterdrop.formats.spec import Column, FileSpec, Type
from rosterdrop.ingest.models import Sync
from rosterdrop.oneroster.objects import boolean, enum, timestamp
from rosterdrop.roster.models import MODELS

# Not in the 1.2.1 users.csv (user-resource links moved to userResources.csv).
DROPPED = ("resourceSourcedIds",)
ID_ALPHABET = re.compile(r"[0-9A-Za-z.\-_/@]+")
BATCH = 20_000
# Values a required column gets when the district's format has none (documented in README).
DEFAULTS = {"enabledUser": "true", "classType": "scheduled"}
# A user with no username is known by the first of these it has.
USERNAME_FROM = ("email", "identifier")


@dataclass(frozen=True)
class Table:
    """One CSV file of the package and the canonical entity it is written from."""

    spec: FileSpec
    entity: str

    @property
    def columns(self) -> list[Column]:
        return [c for c in self.spec.columns if c.name not in DROPPED]


TABLES = [Table(f, f.outputs[0].entity) for f in ONEROSTER_12.files]
ALL_FILES = sorted([f.name for f in ONEROSTER_12.files] + list(NON_ROSTER_FILES_12))


def safe_id(value: str) -> str:
    """The ID in the GUID alphabet (letters, digits and . - _ / @): as it is when it already
    is; otherwise (IDs rosterdrop derived as "class:user", say) a stable digest of it."""
    if ID_ALPHABET.fullmatch(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:32]


def _one_line(value: str) -> str:
    """No carriage return or line feed inside a field (the binding forbids them)."""
    return " ".join(value.splitlines()) if "\n" in value or "\r" in value else value


def school_year_now(today: date) -> int:
    """The school year running now, by the year it ends in (August to July)."""
    return today.year + 1 if today.month >= 8 else today.year


class Writer:
    """Writes a district's records as rows of the package's files, completing what a
    format does not carry but the binding requires (see README: the OneRoster export)."""

    def __init__(self, district, delta: bool, selection: Callable[[str], QuerySet]):
        self.district, self.delta, self.selection = district, delta, selection
        syncs = Sync.objects.filter(district=district).values_list(
            "pk", "finished_at", "started_at"
        )
        self.times = {pk: finished or started for pk, finished, started in syncs}
        orgs = MODELS["orgs"].objects.filter(district=district, status="active").order_by("id")
        self.first_org = orgs.values_list("sourced_id", flat=True).first() or ""
        self.term = f"rosterdrop-term-{school_year_now(date.today())}"

    def rows(self, table: Table, records: list) -> Iterator[list[str | None]]:
        schools = self._class_schools(records) if table.entity == "enrollments" else {}
        for record in records:
            yield [self._cell(table, record, c, schools) or None for c in table.columns]

    def extra_rows(self, table: Table) -> list[list[str | None]]:
        """Records the binding needs that the roster has not: a course for each class that
        names none (as Clever and ParentSquare send them), a term for classes in none."""
        if table.entity == "courses":
            missing = self.selection("classes").filter(courseSourcedId=None)
            rows = []
            for record in missing.order_by("id"):
                cells = {"title": record.title, "orgSourcedId": safe_id(record.schoolSourcedId)}
                rows.append(self._made(table, self.course_for(record), record, cells))
            return rows
        if table.entity == "academicSessions":
            record = self.selection("classes").filter(termSourcedIds=None).order_by("id").first()
            if record is None:
                return []
            year = int(self.term.rsplit("-", 1)[1])
            cells = {
                "title": f"School year {year - 1}-{year}", "type": "schoolYear",
                "startDate": f"{year - 1}-08-01", "endDate": f"{year}-07-31",
                "schoolYear": str(year),
            }  # fmt: skip
            return [self._made(table, self.term, record, cells)]
        return []

    def course_for(self, record) -> str:
        return safe_id(f"rosterdrop-course-{record.sourced_id}")

    def _made(self, table: Table, sourced_id: str, like, cells: dict) -> list[str | None]:
        """A made-up record's row, with the status and time of the record it is made for."""
        head = {"sourcedId": sourced_id}
        if self.delta:
            head |= {"status": like.status, "dateLastModified": self._time(like)}
        return [{**head, **cells}.get(c.name) or None for c in table.columns]

    def _time(self, record) -> str:
        return timestamp(self.times.get(record.changed_sync_id))

    def _cell(self, table: Table, record, column: Column, schools: dict[str, str]) -> str:
        name = column.name
        if name == "sourcedId":
            return safe_id(record.sourced_id)
        if name == "status":
            return record.status if self.delta else ""
        if name == "dateLastModified":
            return self._time(record) if self.delta else ""
        value = getattr(record, name, None) if not column.secret else None
        if value is None:
            value = self._missing(table, record, name, schools)
        return _one_line(self._typed(column, value))

    def _missing(self, table: Table, record, name: str, schools: dict[str, str]) -> str | None:
        """A required value the record lacks, from what else the roster says."""
        match table.entity, name:
            case "enrollments", "schoolSourcedId":
                return schools.get(record.classSourcedId)
            case "users", "username":
                found = (getattr(record, f) for f in USERNAME_FROM)
                return next((v for v in found if v), record.sourced_id)
            case "users", "familyName" | "givenName":  # one name known: it is both
                return record.givenName or record.familyName
            case "academicSessions", "schoolYear":
                return (record.endDate or "")[:4] or None
            case "classes", "courseSourcedId":
                return self.course_for(record)
            case "classes", "termSourcedIds":
                return self.term
            case "roles", "orgSourcedId":
                return self.first_org
        return None

    def _typed(self, column: Column, value: str | None) -> str:
        if value is None or value == "":
            unknown = "ext:unspecified" if column.required and column.extensible else ""
            return DEFAULTS.get(column.name, unknown)
        match column.type:
            case Type.ID:
                return safe_id(value)
            case Type.IDS:
                return ",".join(safe_id(v.strip()) for v in value.split(",") if v.strip())
            case Type.ENUM:
                return (
                    enum(value, column.values)
                    if column.extensible
                    else next((v for v in column.values if v.lower() == value.lower()), value)
                ) or ""
            case Type.BOOLEAN:
                return boolean(value) or ""
        return value

    def _class_schools(self, records: list) -> dict[str, str]:
        """SDS and other formats name no school on an enrollment: its class's."""
        wanted = {r.classSourcedId for r in records if not r.schoolSourcedId}
        if not wanted:
            return {}
        classes = MODELS["classes"].objects.filter(district=self.district, sourced_id__in=wanted)
        return dict(classes.values_list("sourced_id", "schoolSourcedId"))


def changed_since(district, since: Sync) -> list[int]:
    """The syncs applied after `since`: what they changed is the delta."""
    return list(
        Sync.objects.filter(district=district, finished_at__gt=since.finished_at)
        .exclude(pk=since.pk)
        .values_list("pk", flat=True)
    )


def write_package(district, out: BinaryIO, since: Sync | None = None) -> dict[str, int]:
    """Write the package to `out` (a zip); the rows of each file written."""
    delta = since is not None
    later = changed_since(district, since) if delta else []

    def selection(entity: str) -> QuerySet:
        records = MODELS[entity].objects.filter(district=district)
        if delta:
            return records.filter(changed_sync_id__in=later)
        return records.filter(status="active")

    writer = Writer(district, delta, selection)
    written: dict[str, int] = {}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        for table in TABLES:
            count = _write_file(package, table, selection(table.entity).order_by("id"), writer)
            if count:
                written[table.spec.name] = count
        manifest = [["propertyName", "value"], ["manifest.version", "1.0"]]
        manifest.append(["oneroster.version", "1.2"])
        mode = "delta" if delta else "bulk"
        for name in ALL_FILES:
            sent = mode if name in written else "absent"
            manifest.append([f"file.{name.removesuffix('.csv')}", sent])
        manifest += [["source.systemName", "rosterdrop"], ["source.systemCode", district.slug]]
        package.writestr("manifest.csv", _csv(manifest))
    return written


def _write_file(package: zipfile.ZipFile, table: Table, records, writer: Writer) -> int:
    """Write the file sorted by its (written) sourcedId, only if it has rows: the binding
    permits no empty data file. The order is the bytes' order, whatever the database's
    collation, so that a package read back and written again is the same."""
    names = {c.name: pl.String for c in table.columns}
    found = records.iterator(chunk_size=BATCH)
    parts = [
        pl.DataFrame(list(writer.rows(table, batch)), schema=names, orient="row")
        for batch in iter(lambda: list(itertools.islice(found, BATCH)), [])
    ]
    extra = writer.extra_rows(table)
    if extra:
        parts.append(pl.DataFrame(extra, schema=names, orient="row"))
    if not parts:
        return 0
    frame = pl.concat(parts).sort("sourcedId")
    with package.open(table.spec.name, "w", force_zip64=True) as member:
        frame.write_csv(member, line_terminator="\r\n", quote_style="necessary")
    return frame.height


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def export(district, path: Path, since: Sync | None = None) -> dict[str, int]:
    """Write the package to a file, atomically (a temporary name, then renamed)."""
    partial = path.with_name(path.name + ".part")
    with partial.open("wb") as out:
        written = write_package(district, out, since)
    partial.replace(path)
    return written
