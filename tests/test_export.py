"""The OneRoster 1.2 CSV export: for every sample format, a package that keeps the CSV
binding's rules (checked here on their own, from docs/reference/formats.md), that rosterdrop's own
validator reads with no error, and that round-trips: export, import elsewhere, export again."""

import csv
import io
import re
import tempfile
import zipfile
from pathlib import Path

import pytest
from conftest import SAMPLES, SCHOOL_SMALL
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from helpers import rows, write

from rosterdrop.districts.models import District
from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.reader import expand
from rosterdrop.ingest.report import summary
from rosterdrop.ingest.syncs import import_path
from rosterdrop.oneroster.package import TABLES
from rosterdrop.roster.models import MODELS

pytestmark = pytest.mark.django_db(transaction=True)
FIXTURES = Path(__file__).parent / "fixtures"

SOURCES = [
    ("oneroster-1.1", SCHOOL_SMALL),
    ("sds-v1", SAMPLES / "sds-microsoft" / "v1-us" / "25 Users"),
    ("sds-v2.1", SAMPLES / "sds-microsoft" / "v2.1"),
    ("clever", FIXTURES / "clever"),
    ("alo", FIXTURES / "alo"),
    ("parentsquare", FIXTURES / "parentsquare"),
]

# The OneRoster 1.2.1 CSV binding's rostering files: columns in order, required columns
# (docs/reference/formats.md section 3), and enumerations (section 1; + "ext:" where extensible).
HEAD = ["sourcedId", "status", "dateLastModified"]
BINDING = {
    "orgs.csv": (HEAD + ["name", "type", "identifier", "parentSourcedId"], ["name", "type"]),
    "academicSessions.csv": (
        HEAD + ["title", "type", "startDate", "endDate", "parentSourcedId", "schoolYear"],
        ["title", "type", "startDate", "endDate", "schoolYear"],
    ),
    "courses.csv": (
        HEAD + ["schoolYearSourcedId", "title", "courseCode", "grades", "orgSourcedId",
                "subjects", "subjectCodes"],
        ["title", "orgSourcedId"],
    ),
    "classes.csv": (
        HEAD + ["title", "grades", "courseSourcedId", "classCode", "classType", "location",
                "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods"],
        ["title", "courseSourcedId", "classType", "schoolSourcedId", "termSourcedIds"],
    ),
    "users.csv": (
        HEAD + ["enabledUser", "username", "userIds", "givenName", "familyName", "middleName",
                "identifier", "email", "sms", "phone", "agentSourcedIds", "grades", "password",
                "userMasterIdentifier", "preferredGivenName", "preferredMiddleName",
                "preferredFamilyName", "primaryOrgSourcedId", "pronouns"],
        ["enabledUser", "username", "givenName", "familyName"],
    ),
    "roles.csv": (
        HEAD + ["userSourcedId", "roleType", "role", "beginDate", "endDate", "orgSourcedId",
                "userProfileSourcedId"],
        ["userSourcedId", "roleType", "role", "orgSourcedId"],
    ),
    "enrollments.csv": (
        HEAD + ["classSourcedId", "schoolSourcedId", "userSourcedId", "role", "primary",
                "beginDate", "endDate"],
        ["classSourcedId", "schoolSourcedId", "userSourcedId", "role"],
    ),
    "demographics.csv": (
        HEAD + ["birthDate", "sex", "americanIndianOrAlaskaNative", "asian",
                "blackOrAfricanAmerican", "nativeHawaiianOrOtherPacificIslander", "white",
                "demographicRaceTwoOrMoreRaces", "hispanicOrLatinoEthnicity",
                "countryOfBirthCode", "stateOfBirthAbbreviation", "cityOfBirth",
                "publicSchoolResidenceStatus"],
        [],
    ),
}  # fmt: skip
EXT = r"ext:[a-zA-Z0-9.\-_]+"
ENUMS = {
    ("orgs.csv", "type"): ("department", "school", "district", "local", "state", "national"),
    ("academicSessions.csv", "type"): ("gradingPeriod", "semester", "schoolYear", "term"),
    ("classes.csv", "classType"): ("homeroom", "scheduled"),
    ("roles.csv", "roleType"): ("primary", "secondary"),
    ("roles.csv", "role"): (
        "aide", "counselor", "districtAdministrator", "guardian", "parent", "principal",
        "proctor", "relative", "siteAdministrator", "student", "systemAdministrator", "teacher",
    ),
    ("enrollments.csv", "role"): ("administrator", "proctor", "student", "teacher"),
    ("demographics.csv", "sex"): ("male", "female", "unspecified", "other"),
}  # fmt: skip
NOT_EXTENSIBLE = {("roles.csv", "roleType")}
GUID = re.compile(r"[0-9A-Za-z.\-_/@]{1,255}")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
IDS = {"sourcedId", "parentSourcedId", "schoolYearSourcedId", "orgSourcedId", "courseSourcedId",
       "schoolSourcedId", "userSourcedId", "classSourcedId", "primaryOrgSourcedId",
       "userProfileSourcedId"}  # fmt: skip
ID_LISTS = {"termSourcedIds", "agentSourcedIds"}
BOOLEANS = {"enabledUser", "primary", "americanIndianOrAlaskaNative", "asian",
            "blackOrAfricanAmerican", "nativeHawaiianOrOtherPacificIslander", "white",
            "demographicRaceTwoOrMoreRaces", "hispanicOrLatinoEthnicity"}  # fmt: skip
DATES = {"startDate", "endDate", "beginDate", "birthDate"}


USER_IDS = re.compile(r"\{[^:}]+:[^}]+\}(,\{[^:}]+:[^}]+\})*")


def _well_formed(column: str, value: str) -> bool:
    """A non-empty value as its column's type wants it."""
    if column in IDS:
        return bool(GUID.fullmatch(value))
    if column in ID_LISTS:
        return all(GUID.fullmatch(v) for v in value.split(","))
    if column in BOOLEANS:
        return value in ("true", "false")
    if column in DATES:
        return bool(DATE.fullmatch(value))
    if column == "schoolYear":
        return bool(re.fullmatch(r"\d{4}", value))
    if column == "userIds":
        return bool(USER_IDS.fullmatch(value))
    return True


def binding_problems(package: bytes) -> list[str]:
    """What in a package breaks the CSV binding's rules (an empty list if nothing)."""
    problems = []
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        names = zf.namelist()
        if "manifest.csv" not in names or any("/" in n for n in names):
            return ["manifest.csv missing, or a file not at the zip's root"]
        manifest = dict(list(csv.reader(io.StringIO(zf.read("manifest.csv").decode())))[1:])
        if manifest.get("manifest.version") != "1.0" or manifest.get("oneroster.version") != "1.2":
            problems.append(f"manifest versions {manifest}")
        ids: dict[str, set[str]] = {}
        for name in names:
            if name == "manifest.csv":
                continue
            mode = manifest.get(f"file.{name.removesuffix('.csv')}")
            if mode not in ("bulk", "delta"):
                problems.append(f"{name} is in the zip but the manifest says {mode}")
            raw = zf.read(name).decode("utf-8")
            table = list(csv.reader(io.StringIO(raw, newline="")))
            columns, required = BINDING[name]
            header, extra = table[0][: len(columns)], table[0][len(columns) :]
            # Extensions only as metadata.* columns to the right of the binding's, named once.
            if (
                header != columns
                or not all(c.startswith("metadata.") for c in extra)
                or len(set(extra)) != len(extra)
            ):
                problems.append(f"{name} header {table[0]}")
                continue
            if len(table) < 2:
                problems.append(f"{name} has no rows")
            for line, row in enumerate(table[1:], start=2):
                cell = dict(zip(columns, row[: len(columns)], strict=True))
                where = f"{name}:{line}"
                if any("\r" in v or "\n" in v for v in row):
                    problems.append(f"{where} a line break inside a field")
                if mode == "bulk" and (cell["status"] or cell["dateLastModified"]):
                    problems.append(f"{where} status/dateLastModified in a bulk file")
                if mode == "delta" and (
                    cell["status"] not in ("active", "tobedeleted")
                    or not DATETIME.fullmatch(cell["dateLastModified"])
                ):
                    problems.append(f"{where} delta row without status and dateLastModified")
                for column in required:
                    if not cell[column]:
                        problems.append(f"{where} required {column} empty")
                for column, value in cell.items():
                    if not value:
                        continue
                    bad = not _well_formed(column, value)
                    allowed = ENUMS.get((name, column))
                    if allowed and value not in allowed:
                        bad = (
                            bad or (name, column) in NOT_EXTENSIBLE or not re.fullmatch(EXT, value)
                        )
                    if bad:
                        problems.append(f"{where} {column}={value!r}")
                ids.setdefault(name, set()).add(cell["sourcedId"])
        for name, found in ids.items():
            rows_in = len(list(csv.reader(io.StringIO(zf.read(name).decode())))) - 1
            if len(found) != rows_in:
                problems.append(f"{name} repeats a sourcedId")
    return problems


def export_bytes(district, *args: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{district.slug}-export.zip"
        out = io.StringIO()
        call_command("export", district.slug, "--output", str(path), *args, stdout=out)
        assert "OneRoster 1.2" in out.getvalue()
        return path.read_bytes()


def errors_when_read(package: bytes, tmp_path: Path) -> list[dict]:
    path = tmp_path / "package.zip"
    path.write_bytes(package)
    result = check(expand(path), Settings.named("oneroster-1.2")).as_dict()
    return [i for i in result["issues"] if i["severity"] in ("fatal", "error")]


def members(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


@pytest.mark.slow
@pytest.mark.parametrize("fmt, sample", SOURCES, ids=[s[1].name for s in SOURCES])
def test_every_sample_exports_as_valid_oneroster_12_that_round_trips(fmt, sample, tmp_path):
    source = District.objects.create(slug="springfield", name="Source", format=fmt)
    assert import_path(source, sample).status in ("applied", "applied_with_errors")
    package = export_bytes(source)
    problems = binding_problems(package)
    assert problems == [], sorted({re.sub(r":\d+ ", " ", p).split("=")[0] for p in problems})
    assert errors_when_read(package, tmp_path) == []
    assert {"manifest.csv", "orgs.csv", "users.csv"} <= set(members(package))
    # Extra source columns the roster kept travel as metadata.* columns, none lost.
    kept = MODELS["users"].objects.filter(district=source).exclude(metadata=None).first()
    if kept is not None:
        header = members(package)["users.csv"].split(b"\r\n", 1)[0].decode().split(",")
        assert {k if k.startswith("metadata.") else f"metadata.{k}" for k in kept.metadata} <= set(
            header
        )
    # Round trip: import the package into a new district, export that: the same bytes.
    path = tmp_path / "round.zip"
    path.write_bytes(package)
    copy = District.objects.create(slug="copy", name="Copy", format="oneroster-1.2")
    read_back = import_path(copy, path)
    assert read_back.status == "applied"
    # Read without a single finding: the export writes what the spec it is read with expects.
    assert summary(read_back)["issues"] == []
    again = export_bytes(copy)
    theirs, ours = members(package), members(again)
    assert ours.pop("manifest.csv").replace(b"copy", b"springfield") == theirs.pop("manifest.csv")
    assert ours == theirs


def test_a_delta_package_carries_what_changed_since_a_sync_and_applies(tmp_path, school):
    source = District.objects.create(slug="springfield", name="Source", format="oneroster-1.1")
    first = import_path(source, school)
    before = export_bytes(source)
    users = rows(school / "users.csv")
    gone, changed = users[5][0], users[6][0]
    users[6][8] = "Changed 100% %s"  # (SQLite reads rows through printf)
    write(school / "users.csv", [u for u in users if u[0] != gone])
    for name in ("enrollments.csv", "demographics.csv"):
        table = rows(school / name)
        at = table[0].index("userSourcedId" if name == "enrollments.csv" else "sourcedId")
        write(school / name, [r for r in table if r[at] != gone])
    assert import_path(source, school).status == "applied"
    delta = export_bytes(source, "--since", str(first.pk))
    assert binding_problems(delta) == []
    assert errors_when_read(delta, tmp_path) == []
    files = members(delta)
    manifest = files["manifest.csv"].decode()
    assert "file.users,delta" in manifest and "file.orgs,absent" in manifest
    users_rows = {r[0]: r for r in csv.reader(io.StringIO(files["users.csv"].decode()))}
    assert users_rows[gone][1] == "tobedeleted" and users_rows[changed][1] == "active"
    assert users_rows[changed][6] == "Changed 100% %s"
    assert set(users_rows) == {"sourcedId", gone, changed}
    # A district that had the first state and applies the delta has the second.
    copy = District.objects.create(slug="copy", name="Copy", format="oneroster-1.2")
    (tmp_path / "before.zip").write_bytes(before)
    (tmp_path / "delta.zip").write_bytes(delta)
    assert import_path(copy, tmp_path / "before.zip").status == "applied"
    assert import_path(copy, tmp_path / "delta.zip").status == "applied"
    now = members(export_bytes(source))
    copied = members(export_bytes(copy))
    # Every data file, the deleted user's enrollments, roles and demographics too (the manifest
    # names its district).
    del now["manifest.csv"], copied["manifest.csv"]
    assert copied == now


def test_a_delta_after_a_renamed_id_deletes_the_old_id(tmp_path, school):
    """An enrollment sent under a new ID (same class, person and role) is the same record
    renamed: a delta carries the old ID tobedeleted and the new one active, so a district
    that had the first state and applies it has the second."""
    source = District.objects.create(slug="springfield", name="Source", format="oneroster-1.1")
    first = import_path(source, school)
    before = export_bytes(source)
    enrollments = rows(school / "enrollments.csv")
    old = enrollments[3][0]
    enrollments[3][0] = "renamed-enrollment"
    write(school / "enrollments.csv", enrollments)
    renaming = import_path(source, school)
    assert renaming.status == "applied", renaming.message
    assert renaming.changes["enrollments"]["updated"] == 1  # renamed, not removed and added
    delta = export_bytes(source, "--since", str(first.pk))
    assert binding_problems(delta) == []
    table = list(csv.reader(io.StringIO(members(delta)["enrollments.csv"].decode())))
    by_id = {r[0]: r for r in table[1:]}
    assert set(by_id) == {old, "renamed-enrollment"}
    assert by_id[old][1] == "tobedeleted" and by_id["renamed-enrollment"][1] == "active"
    assert by_id[old][2] == by_id["renamed-enrollment"][2]  # the renaming sync's time
    assert by_id[old][3:] == by_id["renamed-enrollment"][3:]  # the record's values
    copy = District.objects.create(slug="copy", name="Copy", format="oneroster-1.2")
    (tmp_path / "before.zip").write_bytes(before)
    (tmp_path / "delta.zip").write_bytes(delta)
    assert import_path(copy, tmp_path / "before.zip").status == "applied"
    assert import_path(copy, tmp_path / "delta.zip").status == "applied"
    now, copied = members(export_bytes(source)), members(export_bytes(copy))
    del now["manifest.csv"], copied["manifest.csv"]
    assert copied == now
    assert not MODELS["enrollments"].objects.filter(district=copy, sourced_id=old, status="active")
    # The roster keeps the old ID tobedeleted, as a removal leaves one; a bulk package has
    # active records only.
    assert (
        MODELS["enrollments"].objects.get(district=source, sourced_id=old).status == "tobedeleted"
    )
    assert (
        old.encode() not in now["enrollments.csv"]
        and b"renamed-enrollment" in now["enrollments.csv"]
    )


def test_the_api_serves_the_package(district, school, operator):
    first = import_path(district, school)
    out = io.StringIO()
    call_command("token", "create", operator.username, stdout=out)
    client = Client(headers={"Authorization": f"Bearer {out.getvalue().strip()}"})
    bulk = client.get(f"/api/districts/{district.slug}/export")
    assert bulk.status_code == 200 and bulk["Content-Type"] == "application/zip"
    assert "attachment" in bulk["Content-Disposition"]
    package = b"".join(bulk.streaming_content)
    assert binding_problems(package) == [] and package == export_bytes(district)
    delta = client.get(f"/api/districts/{district.slug}/export?since={first.pk}")
    assert b"file.users,absent" in members(b"".join(delta.streaming_content))["manifest.csv"]
    assert client.get(f"/api/districts/{district.slug}/export?since=999999").status_code == 404
    assert Client().get(f"/api/districts/{district.slug}/export").status_code == 401


def test_a_bulk_export_reads_no_table_at_random_through_a_lookup_index(district, school):
    """The metadata columns of a bulk package are asked of every record of each table: on
    SQLite, in row order (the table's `_in_order` index). Left to itself SQLite took a
    lookup index (enrollments by user) and read every row at random: 1.85 s of CPU instead
    of 0.2 for 500k enrollments."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's query planner")
    import_path(district, school)
    with CaptureQueriesContext(connection) as queries:
        export_bytes(district)
    asked = [q["sql"] for q in queries.captured_queries if "json_each" in q["sql"]]
    assert len(asked) == len(TABLES)
    with connection.cursor() as cursor:
        for sql in asked:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            plan = " ".join(row[-1] for row in cursor.fetchall())
            used = re.findall(r"USING (?:COVERING )?INDEX (\w+)", plan)
            assert used and all(name.endswith("_in_order") for name in used), plan
