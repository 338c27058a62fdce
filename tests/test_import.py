"""Importing into the roster (SQLite or PostgreSQL, whichever the run is configured for)."""

import json
import subprocess
import sys
from shutil import copy

import polars as pl
import pytest
from conftest import DISTRICT_LARGE
from helpers import edit, rows, write

from rosterdrop.ingest import index_builds
from rosterdrop.ingest.models import Change
from rosterdrop.ingest.report import summary
from rosterdrop.ingest.syncs import approve, import_path
from rosterdrop.roster.models import MODELS, records
from rosterdrop.roster.store import roster_token
from rosterdrop.web.data import search_records

pytestmark = pytest.mark.django_db(transaction=True)


def active(district, entity: str) -> int:
    return records(district, entity).filter(status="active").count()


def settings_tmp():
    from django.conf import settings

    return settings.DATA_DIR / "tmp"


def in_roster(**lookup) -> int:
    """Records of any entity that match `lookup`."""
    return sum(model.objects.filter(**lookup).count() for model in MODELS.values())


def test_large_district_sample_imports_with_exact_counts_then_changes_nothing(district, tmp_path):
    sync = import_path(district, DISTRICT_LARGE)
    assert sync.status == "applied"
    expected = {
        "orgs": 21, "users": 4441, "classes": 1470, "courses": 91,
        "academicSessions": 2, "enrollments": 31045, "demographics": 4225,
    }  # fmt: skip
    for entity, count in expected.items():
        assert sync.changes[entity]["added"] == count
        assert active(district, entity) == count
    # Under another name, so that it is read and compared again, not recognised as re-sent.
    again = import_path(district, copy(DISTRICT_LARGE, tmp_path / "district-again.zip"))
    assert again.status == "no_changes"
    assert again.message == "Nothing changed since the last sync."
    assert all(c["unchanged"] == expected.get(e, c["unchanged"]) for e, c in again.changes.items())
    assert in_roster(district=district, changed_sync_id=again.pk) == 0


def test_changed_field_shows_before_and_after(district, school):
    import_path(district, school)
    before = edit(school / "users.csv", 4, "familyName", "Okonkwo")
    sync = import_path(district, school)
    assert sync.changes["users"]["updated"] == 1
    change = Change.objects.get(sync=sync, action="updated")
    assert change.sourced_id == before[0]
    [diff] = change.fields
    assert diff["field"] == "familyName" and diff["after"] == "Okonkwo"
    assert records(district, "users").get(sourced_id=before[0]).data["familyName"] == "Okonkwo"


def test_field_changes_are_every_differing_field_and_metadata_column_by_name():
    """Field by field over a window of updated records: null equals null, metadata compared
    by its columns (not its text), each record's changes in field-name order."""
    from rosterdrop.ingest.apply import field_changes

    pairs = pl.DataFrame(
        {
            "role": ["student", "teacher", None, "student"],
            "role_old": ["student", "student", None, None],
            "endDate": ["2026-01-01", None, "x", "y"],
            "endDate_old": ["2026-06-01", None, "x", "y"],
            "metadata": ['{"b":"1","a":"2"}', None, '{"a":"2"}', '{"z":null}'],
            "metadata_old": ['{"a": "2", "b": "0"}', '{"c": "3"}', '{"a": "2"}', None],
        }
    )
    assert field_changes(pairs, ["role", "endDate"]) == [
        [
            {"field": "endDate", "before": "2026-06-01", "after": "2026-01-01"},
            {"field": "metadata.b", "before": "0", "after": "1"},
        ],
        [
            {"field": "metadata.c", "before": "3", "after": None},
            {"field": "role", "before": "student", "after": "teacher"},
        ],
        [],
        [{"field": "role", "before": None, "after": "student"}],
    ]


def test_big_removal_is_held_then_approved(district, school):
    import_path(district, school)
    table = rows(school / "enrollments.csv")
    write(school / "enrollments.csv", table[: len(table) // 2])
    held = import_path(district, school)
    assert held.status == "held"
    assert active(district, "enrollments") == 546  # nothing applied
    assert Change.objects.filter(sync=held, action="removed").count() == 546 - (len(table) // 2 - 1)
    applied = approve(held, "test")
    assert applied.status == "applied"
    assert active(district, "enrollments") == len(table) // 2 - 1


def test_removed_record_comes_back_as_reactivated(district, school):
    import_path(district, school)
    table = rows(school / "courses.csv")
    classes = rows(school / "classes.csv")
    gone = table.pop(5)
    write(school / "courses.csv", table)
    still_used = [c for c in classes if c[classes[0].index("courseSourcedId")] != gone[0]]
    write(school / "classes.csv", still_used)
    removed = import_path(district, school)
    assert removed.changes["courses"]["removed"] == 1
    write(school / "courses.csv", table + [gone])
    write(school / "classes.csv", classes)
    back = import_path(district, school)
    assert back.changes["courses"]["reactivated"] == 1
    assert records(district, "courses").get(sourced_id=gone[0]).status == "active"


def test_a_failure_while_applying_leaves_the_roster_whole(district, school, monkeypatch):
    import_path(district, school)
    edit(school / "users.csv", 2, "givenName", "Changed")
    edit(school / "classes.csv", 2, "title", "Changed")
    from rosterdrop.roster import store

    real = store.write_records
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 4:  # orgs, sessions, courses applied; then classes fails
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_records", fail_on_second)
    sync = import_path(district, school)
    assert sync.status == "failed"
    assert not records(district, "users").filter(givenName="Changed").exists()
    assert not records(district, "classes").filter(title="Changed").exists()
    assert in_roster(district=district, changed_sync_id=sync.pk) == 0


def test_a_fingerprint_collision_fails_the_sync_with_nothing_applied(
    district, school, monkeypatch, settings
):
    """Records the roster already holds are not spilled, recognised by fingerprint. If every
    fingerprint collided, a changed record would be missing at apply: the sync must fail whole."""
    import numpy as np

    from rosterdrop.ingest import spill

    import_path(district, school)
    before = edit(school / "users.csv", 5, "givenName", "Collided")
    monkeypatch.setattr(spill, "fingerprints", lambda frame: np.zeros(frame.height, np.uint64))
    sync = import_path(district, school)
    assert sync.status == "failed"
    assert summary(sync)["issues"][-1]["code"] == "internal_error"
    user = records(district, "users").get(sourced_id=before[0])
    assert user.data["givenName"] != "Collided"
    # The new snapshot, written before apply, is gone; the one of the roster as it is stays.
    kept = sorted(p.name for p in (settings.DATA_DIR / "roster").glob(f"{district.pk}-*"))
    current = f"{district.pk}-t{roster_token(district.pk)}"
    assert kept == [f"{current}.arrow", f"{current}.vouched.json"]
    monkeypatch.undo()
    assert import_path(district, school).changes["users"]["updated"] == 1


def test_many_new_records_go_in_through_staged_files(district, monkeypatch, tmp_path):
    """On SQLite, new records in bulk are written to files of their own and copied in C
    (roster/staging.py): the roster is the same as when they go in row by row, and no staged
    file is left attached or on disk."""
    from django.db import connection

    from rosterdrop.ingest import apply
    from rosterdrop.roster import staging

    staged = []
    real = staging.stage

    def counted(frame, folder):
        staged.append(frame.height)
        return real(frame, folder)

    monkeypatch.setattr(apply, "STAGE_MIN_ROWS", 2_000)
    monkeypatch.setattr(staging, "stage", counted)
    sync = import_path(district, DISTRICT_LARGE)
    assert sync.status == "applied"
    assert active(district, "enrollments") == 31045 and active(district, "users") == 4441
    if connection.vendor == "sqlite":
        # At most 10 files (SQLite's limit of attached files): 31,045 enrollments in parts of
        # at least 4,000 rows, and the users, roles and demographics in one file each.
        assert 5 <= len(staged) <= 10 and sum(staged) == 31045 + 3 * 4441 - 216
        with connection.cursor() as cur:
            cur.execute("PRAGMA database_list")
            assert not [name for _, name, _ in cur.fetchall() if name.startswith("rd_staged")]
    assert not list(settings_tmp().glob("spill-*"))
    # The same records as a row-by-row import into another district.
    monkeypatch.undo()
    from rosterdrop.districts.models import District

    other = District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")
    import_path(other, copy(DISTRICT_LARGE, tmp_path / "again.zip"))
    for entity in ("users", "enrollments", "demographics"):
        ours = records(district, entity).order_by("sourced_id")
        theirs = records(other, entity).order_by("sourced_id")
        assert [r.data for r in ours] == [r.data for r in theirs]
        assert list(ours.values_list("content_hash")) == list(theirs.values_list("content_hash"))


def test_a_failure_while_copying_staged_records_applies_nothing(district, school, monkeypatch):
    from django.db import connection

    from rosterdrop.ingest import apply
    from rosterdrop.roster import store

    if not store.stages_new_records():
        pytest.skip("staged files are SQLite's bulk path; PostgreSQL copies with COPY")

    import_path(district, school)
    users = rows(school / "users.csv")
    header = users[0]
    for i, row in enumerate(users[1:]):  # every user under a new ID: all added, old removed
        row[header.index("sourcedId")] = f"new-{i}"
    write(school / "users.csv", users)
    monkeypatch.setattr(apply, "STAGE_MIN_ROWS", 10)
    monkeypatch.setattr(store, "insert_staged", lambda *a: (_ for _ in ()).throw(OSError("full")))
    district.removal_threshold = 1.0
    district.save()
    sync = import_path(district, school)
    assert sync.status == "failed"
    assert not records(district, "users").filter(sourced_id__startswith="new-").exists()
    assert active(district, "users") == len(users) - 1
    with connection.cursor() as cur:
        cur.execute("PRAGMA database_list")
        assert not [name for _, name, _ in cur.fetchall() if name.startswith("rd_staged")]
    assert not list(settings_tmp().glob("spill-*"))


def test_repeated_ids_of_records_already_in_the_roster_are_found(district, school):
    """Records matched with the roster keep no key of their own in memory (enrollments):
    a repeated ID among them is still told apart by key, and reported at its line."""
    import_path(district, school)
    table = rows(school / "enrollments.csv")
    header = table[0]
    again = list(table[3])  # the same row twice
    changed = list(table[5])  # a second row for an ID, with other content
    changed[header.index("endDate")] = "2026-06-30"
    write(school / "enrollments.csv", [*table, again, changed])
    sync = import_path(district, school)
    issues = summary(sync)["issues"]
    found = {(i["line"], i["value"]) for i in issues if i["code"] == "duplicate_id"}
    n = len(table)
    assert found == {(n + 1, again[0]), (n + 2, changed[0])}
    assert sync.changes["enrollments"]["updated"] == 0  # the first row of each ID wins
    assert sync.status == "no_changes"


def test_a_folder_is_its_files_not_its_subfolders(district, school):
    """A folder of an SIS's exports often keeps older ones in a subfolder: not read."""
    (school / "archive").mkdir()
    (school / "archive" / "users.csv").write_text("not,a,roster\n")
    sync = import_path(district, school)
    assert sync.status == "applied"
    sent = sorted(u.filename for u in sync.uploads.all())
    assert sent == sorted(p.name for p in school.glob("*.csv"))


def test_a_district_saved_from_an_older_copy_keeps_its_roster_token(district, school):
    """Settings saved through an object read before a sync do not take the roster back."""
    from rosterdrop.districts.models import District

    earlier = District.objects.get(pk=district.pk)
    import_path(district, school)
    token = roster_token(district.pk)
    earlier.name = "Springfield USD"
    earlier.save()
    assert District.objects.get(pk=district.pk).name == "Springfield USD"
    assert roster_token(district.pk) == token


def test_delta_file_removes_only_what_it_says(district, school):
    import_path(district, school)
    manifest = rows(school / "manifest.csv")
    for row in manifest:
        if row[0] == "file.users":
            row[1] = "delta"
    write(school / "manifest.csv", manifest)
    users = rows(school / "users.csv")
    target = users[3]
    target[users[0].index("status")] = "tobedeleted"
    write(school / "users.csv", [users[0], target])
    sync = import_path(district, school)
    assert sync.changes["users"]["removed"] == 1
    assert active(district, "users") == 78
    # The bulk enrollments name users this delta did not send: found in the roster.
    enrollments = sync.changes["enrollments"]
    assert enrollments["added"] == enrollments["updated"] == 0
    assert enrollments["unchanged"] + enrollments["removed"] == 546


def test_fatal_upload_applies_nothing_and_explains(district, school):
    manifest = (school / "manifest.csv").read_text()
    (school / "manifest.csv").write_text(
        manifest.replace("oneroster.version,1.1", "oneroster.version,")
    )
    sync = import_path(district, school)
    assert sync.status == "failed"
    assert summary(sync)["issues"][0]["code"] == "manifest_invalid"
    assert in_roster(district=district) == 0


def test_cli_contract(district, school, tmp_path):
    cli = [sys.executable, "-m", "rosterdrop"]
    validate = subprocess.run([*cli, "validate", str(school), "--json"], capture_output=True)
    assert validate.returncode == 0, validate.stderr
    result = json.loads(validate.stdout)
    assert set(result) >= {"format", "files", "counts", "issues"}
    assert {"name", "rows", "encoding"} <= set(result["files"][0])
    (school / "orgs.csv").write_text("nothing,useful\n")
    broken = subprocess.run([*cli, "validate", str(school), "--json"], capture_output=True)
    assert broken.returncode == 1


def test_lost_hash_snapshot_is_rebuilt_from_the_database(district, school, settings):
    import_path(district, school)
    for snapshot in (settings.DATA_DIR / "roster").glob(f"{district.pk}-*.arrow"):
        snapshot.unlink()
    edit(school / "users.csv", 5, "givenName", "Rebuilt")
    sync = import_path(district, school)
    assert sync.changes["users"] == {
        "added": 0,
        "updated": 1,
        "removed": 0,
        "reactivated": 0,
        "unchanged": 78,
    }


@pytest.mark.parametrize("written", ["older columns", "not a snapshot"])
def test_a_snapshot_this_version_cannot_read_is_rebuilt(district, school, settings, written):
    import_path(district, school)
    district.refresh_from_db()
    [path] = (settings.DATA_DIR / "roster").glob(f"{district.pk}-t*.arrow")
    if written == "older columns":  # as written before key hashes were kept
        pl.read_ipc(path.read_bytes()).drop("_keyhash").write_ipc(path)
    else:
        path.write_bytes(b"half a file")
    edit(school / "users.csv", 5, "givenName", "Rebuilt")
    sync = import_path(district, school)
    assert sync.changes["users"]["updated"] == 1 and sync.changes["users"]["unchanged"] == 78
    [path] = (settings.DATA_DIR / "roster").glob(f"{district.pk}-t*.arrow")
    assert path.name == f"{district.pk}-t{roster_token(district.pk)}.arrow"
    assert "_keyhash" in pl.read_ipc_schema(path)


def test_saved_snapshot_is_what_the_database_holds(district, school, settings):
    """The snapshot kept beside the database after a sync equals the one rebuilt from the
    roster table: same keys and key hashes, content hashes, statuses and natural key hashes,
    and the row IDs it knows, after records removed and one renamed (its old ID left
    tobedeleted)."""
    from rosterdrop.roster import hashes

    import_path(district, school)
    edit(school / "users.csv", 5, "givenName", "Changed")
    lines = (school / "enrollments.csv").read_text().splitlines(keepends=True)[:-3]
    lines[1] = "renamed-enrollment" + lines[1][lines[1].index(",") :]
    (school / "enrollments.csv").write_text("".join(lines))
    assert import_path(district, school).changes["enrollments"]["updated"] == 1
    saved = hashes.Snapshot(district.pk, roster_token(district.pk)).frame()
    for path in (settings.DATA_DIR / "roster").glob(f"{district.pk}-*.arrow"):
        path.unlink()
    rebuilt = hashes.Snapshot(district.pk, roster_token(district.pk)).frame()
    order = ["entity", "_key"]
    # Row IDs: those the saved one knows are the database's (an apply's new records', and
    # the row left under a renamed record's old ID, are not known before apply).
    ids = saved.join(rebuilt, on=order, suffix="_db").drop_nulls("_rowid")
    assert (ids["_rowid"] == ids["_rowid_db"]).all()
    assert rebuilt.drop("_rowid").sort(order).equals(saved.drop("_rowid").sort(order))
    # Both keep an entity's records together, which is what entity_slices relies on.
    for snapshot in (saved, rebuilt):
        assert snapshot["entity"].is_sorted()
        slices = dict(hashes.entity_slices(snapshot))
        for entity in ("orgs", "users", "enrollments", "agents"):
            mine = snapshot.filter(pl.col("entity") == entity).drop("entity")
            assert slices.get(entity, mine.clear()).equals(mine)
    assert rebuilt.filter(pl.col("status") == "tobedeleted").height == 4
    enrollments = rebuilt.filter(pl.col("entity") == "enrollments")
    assert enrollments["_natural"].null_count() == 0
    assert rebuilt.filter(pl.col("entity") == "users")["_natural"].null_count() == len(
        rebuilt.filter(pl.col("entity") == "users")
    )


def test_roster_changed_by_another_sync_meanwhile_applies_nothing(district, school, monkeypatch):
    from rosterdrop.roster import hashes
    from rosterdrop.roster.models import RosterToken

    first = import_path(district, school)
    edit(school / "users.csv", 5, "givenName", "Late")
    real_frame = hashes.Snapshot.frame

    def read_then_someone_else_applies(snapshot, **kwargs):
        frame = real_frame(snapshot, **kwargs)
        RosterToken.objects.filter(pk=snapshot.district_id).update(token=snapshot.token + 1)
        return frame

    monkeypatch.setattr(hashes.Snapshot, "frame", read_then_someone_else_applies)
    sync = import_path(district, school)
    assert sync.status == "failed"
    assert summary(sync)["issues"][-1]["code"] == "roster_changed"
    assert not records(district, "users").filter(givenName="Late").exists()
    assert first.status == "applied"


def test_deleting_a_district_deletes_its_records(district, school):
    """Records have no foreign key in the database (PostgreSQL would check millions at
    commit): Django's cascade removes them with their district, and only theirs."""
    from rosterdrop.districts.models import District

    other = District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")
    import_path(district, school)
    import_path(other, school)
    theirs = in_roster(district=other)
    assert theirs == in_roster(district=district) > 0
    district.delete()
    assert in_roster(district_id=district.pk) == 0
    assert in_roster(district=other) == theirs


def test_postgresql_statistics_follow_a_large_load(district, school):
    """After a load that changes the table's make-up, PostgreSQL's statistics are refreshed:
    stale ones made it walk a whole entity for each lookup of changed records."""
    from django.db import connection

    from rosterdrop.districts.models import District

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner statistics; SQLite's plans are fixed by CROSS JOIN")

    def estimated() -> float:
        with connection.cursor() as cur:
            cur.execute("SELECT reltuples FROM pg_class WHERE relname = 'roster_enrollment'")
            return cur.fetchone()[0]

    with connection.cursor() as cur:
        cur.execute("ANALYZE roster_enrollment")  # empty: the planner expects no records
    assert estimated() == 0
    import_path(district, school)  # a couple of thousand records: not worth it
    assert estimated() == 0
    other = District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")
    import_path(other, DISTRICT_LARGE)
    assert estimated() == pytest.approx(MODELS["enrollments"].objects.count(), rel=0.1)


def test_passwords_in_roster_files_are_never_kept(district, school):
    before = edit(school / "users.csv", 3, "password", "hunter2-plain")
    import_path(district, school)
    user = records(district, "users").get(sourced_id=before[0])
    assert "hunter2-plain" not in str(user.data)
    assert not search_records(district, "users", "hunter2").exists()


def missing_while_writing(monkeypatch, district, path) -> tuple[dict[str, set[str]], object]:
    """Import `path` with every entity's indexes deferrable however few its records, noting
    which of each table's indexes were gone while its rows went in; the indexes are checked
    to be all back afterwards. Returns those found missing and the sync."""
    from contextlib import contextmanager

    from rosterdrop.roster import store

    missing: dict[str, set[str]] = {}
    real = store.lookups_built_after

    @contextmanager
    def watched(cur, entity, adding, district_id):
        with real(cur, entity, adding, district_id) as analyzed:
            missing[entity] = declared_indexes(entity) - table_indexes(entity)
            yield analyzed

    monkeypatch.setattr(store, "DEFER_LOOKUPS_MIN", 1)
    monkeypatch.setattr(store, "lookups_built_after", watched)
    sync = import_path(district, path)
    assert sync.status == "applied"
    assert index_builds.build(district) == [sync.pk]  # on SQLite the reference indexes
    for entity in MODELS:
        assert declared_indexes(entity) <= table_indexes(entity), entity
    return missing, sync


def table_indexes(entity: str) -> set[str]:
    from django.db import connection

    with connection.cursor() as cur:
        return set(connection.introspection.get_constraints(cur, MODELS[entity]._meta.db_table))


def declared_indexes(entity: str) -> set[str]:
    """The names of the entity's secondary indexes and unique key."""
    meta = MODELS[entity]._meta
    return {i.name for i in meta.indexes} | {c.name for c in meta.constraints}


def test_a_first_import_builds_the_reference_indexes_after_its_rows(district, monkeypatch):
    """A first import that outnumbers the table drops indexes and builds them after its rows
    (store.lookups_built_after): on SQLite every secondary index (the reading and the
    reference ones), after its sync (the build that follows it), on PostgreSQL, where the
    table holds no other district's records, those and the unique key, which it builds again
    in its transaction. While its rows go in they are gone, afterwards every one is back."""
    from django.db import connection

    missing, sync = missing_while_writing(monkeypatch, district, DISTRICT_LARGE)
    assert active(district, "enrollments") == 31045
    for entity in MODELS:
        if sync.changes.get(entity, {}).get("added"):
            secondary = {i.name for i in MODELS[entity]._meta.indexes}
            deferred = secondary if connection.vendor == "sqlite" else declared_indexes(entity)
            assert missing[entity] == deferred, entity


def test_a_first_import_analyzes_each_table_it_built_once(district, monkeypatch):
    """PostgreSQL: a table whose indexes were built after its rows is analyzed then, in the
    transaction (the gaps are planned from it); after the commit it is not analyzed again
    (store.refresh_statistics), while a table that grew as much without that still is."""
    from django.db import connection

    from rosterdrop.roster import store

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's statistics")
    monkeypatch.setattr(store, "ANALYZE_ADDED_MIN", 1)

    def analyzed() -> dict[str, int]:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT relname, analyze_count FROM pg_stat_user_tables")
            return dict(cur.fetchall())

    before = analyzed()
    missing, sync = missing_while_writing(monkeypatch, district, DISTRICT_LARGE)
    after = analyzed()
    for entity, model in MODELS.items():
        if sync.changes.get(entity, {}).get("added"):
            name = model._meta.db_table
            assert missing[entity], entity  # its indexes were built after its rows
            assert after[name] - before.get(name, 0) == 1, entity


def test_postgresql_keeps_the_indexes_of_a_table_another_district_holds(
    district, school, monkeypatch
):
    """PostgreSQL's DROP INDEX would lock every reader of the table out until the commit: a
    table that holds another district's records keeps its indexes while a first import
    writes to it."""
    from django.db import connection

    from rosterdrop.districts.models import District

    if connection.vendor != "postgresql":
        pytest.skip("SQLite's readers keep the committed schema")
    other = District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")
    assert import_path(other, school).status == "applied"
    held = {e for e, model in MODELS.items() if model.objects.filter(district=other).exists()}
    assert {"users", "classes", "enrollments"} <= held
    missing, _ = missing_while_writing(monkeypatch, district, DISTRICT_LARGE)
    for entity in held & missing.keys():
        assert missing[entity] == set(), entity


def test_postgresql_keeps_the_indexes_of_a_table_being_read(district, monkeypatch):
    """Nor does a first import wait for a reader of the table, or drop its indexes under it:
    the table is locked only if nobody uses it at that moment."""
    import psycopg
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite's readers keep the committed schema")
    with psycopg.connect(**connection.get_connection_params()) as reader:
        reader.execute("SELECT count(*) FROM roster_enrollment")  # its transaction stays open
        missing, _ = missing_while_writing(monkeypatch, district, DISTRICT_LARGE)
    assert missing["enrollments"] == set()
    assert missing["users"] == declared_indexes("users")


class Explaining:
    """A DB-API cursor that keeps PostgreSQL's plan of each statement it runs over the listed
    keys of a sync (store's temporary rd_* tables), then runs it."""

    def __init__(self, cursor):
        self.cursor, self.plans = cursor, []

    def execute(self, sql, params=None):
        if sql.startswith(("UPDATE", "SELECT")) and " rd_" in sql:
            self.cursor.execute(f"EXPLAIN {sql}", params)
            self.plans.append("\n".join(row[0] for row in self.cursor.fetchall()))
        return self.cursor.execute(sql, params)

    def __getattr__(self, name):
        return getattr(self.cursor, name)


def test_postgresql_seeks_the_few_records_a_sync_changes(district):
    """The records a sync changes or removes, a few of the entity's, are sought one by one in
    the unique index: hashing their keys and walking every record of the entity instead (the
    planner's choice with its default cost of a random read) took 5.3 s of server CPU against
    3.3 s for 60k of 2M enrollments."""
    from django.db import connection, transaction

    from rosterdrop.roster import store

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner; SQLite's plans are fixed by CROSS JOIN")
    sync = import_path(district, DISTRICT_LARGE)
    keys = records(district, "enrollments").order_by("?").values_list("sourced_id", flat=True)
    few = pl.DataFrame({"_key": list(keys[:600])})  # 2% of 31,045
    with transaction.atomic(), connection.cursor() as wrapper:
        cur = Explaining(wrapper.cursor)
        store.old_data(cur, district.pk, "enrollments", few)
        store.write_records(
            cur, district.pk, "enrollments", sync.pk,
            added=few.clear(), changed=pl.DataFrame(), removed=few,
        )  # fmt: skip
        transaction.set_rollback(True)
    assert len(cur.plans) == 2
    for plan in cur.plans:
        assert "Index Scan using enrollment_unique_source_id" in plan, plan
        assert "Seq Scan on roster_enrollment" not in plan, plan


def test_a_syncs_changed_records_come_back_as_they_were(district):
    """The change rows' before values: write_records gives the changed records' fields and
    metadata as they were. On PostgreSQL the UPDATE that rewrites them returns the versions it
    replaces (one statement: seeking the same records first cost ~10% of apply's server CPU at
    `huge`), and no statement over listed keys is compiled (JIT: 0.6-1.3 s per big UPDATE)."""
    from django.db import connection, transaction

    from rosterdrop.roster import store
    from rosterdrop.roster.schema import FIELDS, HASH, KEY, METADATA

    sync = import_path(district, DISTRICT_LARGE)
    fields = [*FIELDS["enrollments"], METADATA]
    enrollments = records(district, "enrollments").order_by("id")
    picked = list(enrollments.values("sourced_id", *fields)[::50])  # 2% of 31,045
    changed = pl.DataFrame(
        [
            {KEY: r["sourced_id"], HASH: 1, **{f: r[f] for f in FIELDS["enrollments"]}}
            for r in picked
        ],
        schema={KEY: pl.String, HASH: pl.Int64, **dict.fromkeys(FIELDS["enrollments"], pl.String)},
    ).with_columns(pl.lit('{"new": "1"}').alias(METADATA), pl.lit("2099-06-30").alias("endDate"))
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as wrapper:
        cur = wrapper.cursor
        if postgres:
            wrapper.execute("SET LOCAL jit_above_cost = 0")  # any statement would be compiled
            cur = Explaining(wrapper.cursor)
        written = store.write_records(
            cur, district.pk, "enrollments", sync.pk,
            added=changed.clear(), changed=changed, removed=changed.select(KEY).clear(),
            before=True,
        )  # fmt: skip
        transaction.set_rollback(True)
    was = {r["sourced_id"]: [r[f] for f in FIELDS["enrollments"]] + [r[METADATA]] for r in picked}
    olds = [f"{f}_old" for f in fields]
    got = {
        key: [*rest[:-1], rest[-1] and json.loads(rest[-1])]
        for key, *rest in written.select(KEY, *olds).iter_rows()
    }
    assert got == was
    if postgres:
        (plan,) = cur.plans  # the update alone
        assert plan.startswith("Update on roster_enrollment") and "JIT" not in plan, plan


def test_no_index_of_a_roster_table_holds_what_a_sync_changes_on_a_kept_record(db):
    """A sync that updates or removes a record writes its status and changed_sync_id: in no
    index, PostgreSQL writes the record's new version on its own page and no index entry
    (a HOT update), and SQLite writes no index at all."""
    from django.db import connection

    for entity, model in MODELS.items():
        with connection.cursor() as cur:
            constraints = connection.introspection.get_constraints(cur, model._meta.db_table)
        indexed = {column for c in constraints.values() for column in c["columns"] or []}
        assert indexed.isdisjoint({"status", "changed_sync_id"}), entity


def test_a_syncs_change_rows_are_not_checked_one_by_one_and_go_with_their_district(
    district, school
):
    """A sync writes its change rows in bulk, in its own transaction: no database constraint
    checks each one's sync at the commit (PostgreSQL's deferred check of 174k rows was ~1 s of
    its CPU at `huge`'s 1% change); Django still deletes them with their sync."""
    from django.db import connection

    from rosterdrop.ingest.models import Sync

    import_path(district, school)
    edit(school / "users.csv", 2, "givenName", "Changed")
    sync = import_path(district, school)
    assert Change.objects.filter(sync=sync, action="updated").count() == 1
    with connection.cursor() as cur:
        constraints = connection.introspection.get_constraints(cur, Change._meta.db_table)
    assert not [c for c in constraints.values() if c["foreign_key"]], constraints
    district.delete()
    assert not Sync.objects.exists()
    assert not Change.objects.exists()


def test_postgresql_updates_and_removes_records_in_place(district):
    """Records a sync updates or marks removed keep their page and write no index entry (HOT
    updates): the roster tables leave room on every page (roster 0009) for the new versions."""
    from django.db import connection

    from rosterdrop.roster import store
    from rosterdrop.roster.schema import FIELDS, HASH, KEY, METADATA

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL storage parameter and PostgreSQL's statistics")
    sync = import_path(district, DISTRICT_LARGE)
    enrollments = records(district, "enrollments").order_by("id")
    # Spread over the table: one of every 500 records updated, the next one removed.
    picked = list(enrollments.values("sourced_id", *FIELDS["enrollments"])[::500])
    changed = pl.DataFrame(
        [
            {KEY: r["sourced_id"], HASH: 1, **{f: r[f] for f in FIELDS["enrollments"]}}
            for r in picked
        ]
    ).with_columns(
        pl.lit(None, pl.String).alias(METADATA), pl.col("endDate").fill_null("2026-06-30")
    )
    removed = pl.DataFrame({KEY: list(enrollments.values_list("sourced_id", flat=True)[1::500])})
    with store.bulk_connection() as cur:
        store.write_records(
            cur, district.pk, "enrollments", sync.pk,
            added=changed.clear(), changed=changed, removed=removed,
        )  # fmt: skip
        cur.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
            "WHERE relname = 'roster_enrollment'"
        )
        updates, in_place = cur.fetchone()
    assert updates == len(picked) + removed.height > 100
    assert in_place == updates


def test_updated_records_rewrite_a_lookup_only_where_its_fields_changed(district, school):
    """SQLite rewrites the index entries of every column an UPDATE assigns, changed or not:
    records updated for another field (an end date) wrote both enrollment lookups' pages again
    (~80k of the ~334k pages `huge`'s 1% change wrote, bench/README.md, sqlite1pct26). Their
    lookup fields are assigned only to the records whose values differ, and those get them."""
    from django.db import connection

    from rosterdrop.roster import store
    from rosterdrop.roster.schema import FIELDS, HASH, KEY, METADATA

    sync = import_path(district, school)
    enrollments = records(district, "enrollments").order_by("id")
    picked = list(enrollments.values("sourced_id", *FIELDS["enrollments"])[:4])
    other_class = enrollments.exclude(classSourcedId=picked[0]["classSourcedId"]).first()
    changed = pl.DataFrame(
        [
            {KEY: r["sourced_id"], HASH: 1, **{f: r[f] for f in FIELDS["enrollments"]}}
            for r in picked
        ]
    ).with_columns(pl.lit(None, pl.String).alias(METADATA), pl.lit("2026-06-30").alias("endDate"))
    moved = changed[KEY][0]
    changed = changed.with_columns(
        pl.when(pl.col(KEY) == moved)
        .then(pl.lit(other_class.classSourcedId))
        .otherwise(pl.col("classSourcedId"))
        .alias("classSourcedId")
    )
    sqlite = connection.vendor == "sqlite"
    with store.bulk_connection() as cur:
        if sqlite:  # fires for each row whose lookup fields an UPDATE assigns, equal or not
            cur.execute("CREATE TEMP TABLE assigned (sourced_id TEXT)")
            cur.execute(
                'CREATE TEMP TRIGGER lookups_assigned AFTER UPDATE OF "userSourcedId", '
                '"classSourcedId", "role" ON roster_enrollment '
                "BEGIN INSERT INTO assigned VALUES (new.sourced_id); END"
            )
        store.write_records(
            cur, district.pk, "enrollments", sync.pk,
            added=changed.clear(), changed=changed, removed=changed.select(KEY).clear(),
        )  # fmt: skip
        if sqlite:
            cur.execute("SELECT sourced_id FROM assigned")
            assert cur.fetchall() == [(moved,)]
            cur.execute("DROP TRIGGER lookups_assigned")
            cur.execute("DROP TABLE assigned")
    got = enrollments.filter(sourced_id__in=changed[KEY].to_list())
    assert {(e.sourced_id, e.classSourcedId, e.endDate) for e in got} == set(
        changed.select(KEY, "classSourcedId", "endDate").iter_rows()
    )
    assert enrollments.filter(classSourcedId=other_class.classSourcedId, sourced_id=moved).exists()


def test_sqlite_updates_records_without_a_statement_journal(district):
    """SQLite keeps a copy of every page that an UPDATE which could fail midway changes (its
    statement journal, written to a temporary file past 64 KiB), to undo that statement alone:
    at `huge`'s 1% change 233k pages, 950 MB written to /var/tmp and never read (bench/README.md,
    sqlwal29). A failed apply is rolled back whole, so its UPDATEs are OR FAIL and keep none:
    marking a third of a district's enrollments removed and rewriting others writes nothing
    before the commit (the WAL only then: the cache holds the pages)."""
    from pathlib import Path

    from django.db import connection

    from rosterdrop.roster import store
    from rosterdrop.roster.schema import FIELDS, HASH, KEY, METADATA

    io = Path("/proc/thread-self/io")
    if connection.vendor != "sqlite" or not io.exists():
        pytest.skip("SQLite's statement journal, seen in the bytes this thread writes (Linux)")

    def written() -> int:  # bytes this thread handed to write() and pwrite() so far
        return int(dict(line.split(": ") for line in io.read_text().splitlines())["wchar"])

    sync = import_path(district, DISTRICT_LARGE)
    enrollments = records(district, "enrollments").order_by("id")
    keys = list(enrollments.values_list("sourced_id", flat=True))
    removed = pl.DataFrame({KEY: keys[::3]})
    fields = FIELDS["enrollments"]
    picked = enrollments.filter(sourced_id__in=keys[1::30]).values("sourced_id", *fields)
    changed = pl.DataFrame(
        [{KEY: r["sourced_id"], HASH: 1, **{f: r[f] for f in fields}} for r in picked]
    ).with_columns(pl.lit(None, pl.String).alias(METADATA), pl.lit("2026-06-30").alias("endDate"))
    with store.bulk_connection() as cur:
        before = written()
        store.write_records(
            cur, district.pk, "enrollments", sync.pk,
            added=changed.clear(), changed=changed, removed=removed,
        )  # fmt: skip
        wrote = written() - before
    # With a statement journal: the ~1,700 pages changed, ~7 MB, and more for the rewrites.
    assert wrote < 1 << 20, wrote  # the keyed temporary tables past their 2 MB cache: ~0.3 MB
    assert enrollments.filter(status="tobedeleted").count() == len(removed)
    assert enrollments.filter(endDate="2026-06-30").count() == len(changed)


def test_sqlite_keeps_the_listed_records_tables_in_memory(district):
    """The temporary tables of the records an apply's statements look up (store._keyed_table)
    have SQLite's cache of their own, 2 MB unless set: past it their pages were written to a
    temporary file and read back (at `huge`'s 1% change ~7,500 pages, bench/README.md
    sqlpages30). In a bulk_connection it is store.TEMP_CACHE_KB: a table of ~10 MB (keys and
    their index) is written nowhere, and the setting is as it was after."""
    from pathlib import Path

    from django.db import connection

    from rosterdrop.roster import store
    from rosterdrop.roster.schema import KEY

    io = Path("/proc/thread-self/io")
    if connection.vendor != "sqlite" or not io.exists():
        pytest.skip("SQLite's temporary tables, seen in the bytes this thread writes (Linux)")

    def written() -> int:  # bytes this thread handed to write() and pwrite() so far
        return int(dict(line.split(": ") for line in io.read_text().splitlines())["wchar"])

    keys = pl.DataFrame({KEY: [f"{i:08d}-{'k' * 72}" for i in range(60_000)]})
    with connection.cursor() as cur:
        cur.execute("PRAGMA temp.cache_size")
        (default,) = cur.fetchone()
    with store.bulk_connection() as cur:
        before = written()
        keyed = store._keyed_table(cur, "rd_listed", keys)
        cur.execute(f"SELECT count(*) FROM {keyed.name}")
        assert cur.fetchone() == (60_000,)
        wrote = written() - before
        cur.execute(f"DROP TABLE {keyed.name}")
    assert wrote < 1 << 16, wrote  # with the 2 MB cache: 9.9 MB
    with connection.cursor() as cur:
        cur.execute("PRAGMA temp.cache_size")
        assert cur.fetchone() == (default,)


def test_records_marked_removed_come_back_with_what_they_named(district, school):
    """The statement that marks records removed returns the fields asked of them (ingest.gaps
    reads what removed enrollments named from it, not by seeking them again after apply)."""
    from rosterdrop.roster import store

    sync = import_path(district, school)
    named = ("userSourcedId", "classSourcedId", "role")
    picked = list(records(district, "enrollments").order_by("id").values("sourced_id", *named)[:3])
    removed = pl.DataFrame({"_key": [r["sourced_id"] for r in picked]})
    with store.bulk_connection() as cur:
        marked = store.write_records(
            cur, district.pk, "enrollments", sync.pk,
            added=removed.clear(), changed=pl.DataFrame(), removed=removed, returning=named,
        )  # fmt: skip
    assert sorted(marked.drop("_id").rows()) == sorted(
        (r["sourced_id"], *(r[f] for f in named)) for r in picked
    )
    assert records(district, "enrollments").filter(status="tobedeleted").count() == 3


def test_change_rows_keep_an_id_first_given_after_many_rows_without_one(district, school):
    """A sync's change rows go to the database in one frame: an ID that only its 101st row
    has (the old row left under a renamed record, after 100 removals) is kept, not refused
    by a column type guessed from the first rows (an SDS v1 district moving to OneRoster
    failed so)."""
    from rosterdrop.ingest.apply import CHANGE_COLUMNS
    from rosterdrop.roster import store

    sync = import_path(district, school)
    removed = [(sync.pk, "users", f"gone-{i}", "removed", "[]", i, None) for i in range(100)]
    renamed = (sync.pk, "users", "new-id", "updated", "[]", 1000, 631)
    with store.bulk_connection() as cur:
        store.insert_rows(cur, "ingest_change", list(CHANGE_COLUMNS), [*removed, renamed])
    assert Change.objects.get(sync=sync, sourced_id="new-id").left_record_id == 631


def test_a_change_rewrites_in_a_page_cache_the_memory_target_leaves(district, school, monkeypatch):
    """On SQLite a change's apply rewrites records in place with a page cache of its own
    (store.cache_for_rewrites) of at most 768 MB: at `huge`'s 1% change 1 GB filled and made
    the apply the import's memory peak, at the 1.5 GB target (bench/README.md, cache21). The
    connection's own cache comes back after the sync."""
    from django.db import connection

    from rosterdrop.roster import store

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's page cache")
    import_path(district, school)
    seen = []
    real = store.write_records

    def watched(cur, *args, **kwargs):
        cur.execute("PRAGMA cache_size")
        seen.append(cur.fetchone()[0])
        return real(cur, *args, **kwargs)

    monkeypatch.setattr(store, "write_records", watched)
    edit(school / "users.csv", 4, "familyName", "Okonkwo")
    assert import_path(district, school).changes["users"]["updated"] == 1
    assert seen and set(seen) == {-768_000}
    with connection.cursor() as cur:
        cur.execute("PRAGMA cache_size")
        assert cur.fetchone()[0] == -2000


def _roster_rows(district, entity: str, field: str = "status") -> dict[str, tuple]:
    """The district's records of `entity` as the database holds them: key -> (row ID, field)."""
    from rosterdrop.roster import store

    with store.bulk_connection() as cur:
        cur.execute(
            f'SELECT sourced_id, id, "{field}" FROM {store.table(entity)} '
            f"WHERE district_id = {district.pk}"
        )
        return {key: (i, value) for key, i, value in cur.fetchall()}


def _saved_ids(district) -> pl.DataFrame:
    """entity, _key and _rowid of the snapshot the last sync saved."""
    from rosterdrop.roster import hashes

    saved = hashes.Snapshot(district.pk, roster_token(district.pk)).frame()
    return saved.select("entity", "_key", "_rowid")


def test_updates_and_removals_change_only_their_own_records_by_row_id(
    district, school, settings, monkeypatch
):
    """Apply seeks the records it updates, renames and removes by the row IDs the snapshot
    keeps (store.seeks_by_id): every ID the next snapshot keeps is its record's in the
    database, after a rename too (the renamed record keeps its row, the old ID's row is new);
    and with every ID in the snapshot off by one, a sync still changes only the records named
    (sought by key once their IDs name other records)."""
    from rosterdrop.roster import hashes, store

    import_path(district, school)
    # Rebuilt from the database: every row ID known (an apply's new records' are not).
    for path in (settings.DATA_DIR / "roster").glob(f"{district.pk}-*.arrow"):
        path.unlink()
    assert _saved_ids(district)["_rowid"].null_count() == 0
    before = _roster_rows(district, "enrollments")
    sought = {"by id": 0, "by key": 0}
    by_id, by_key = store._update_by_id, store._update_keyed

    def counted(how, update):
        def run(cur, keyed, *args, **kwargs):
            sought[how] += keyed.rows
            return update(cur, keyed, *args, **kwargs)

        return run

    monkeypatch.setattr(store, "_update_by_id", counted("by id", by_id))
    monkeypatch.setattr(store, "_update_keyed", counted("by key", by_key))
    changed = edit(school / "users.csv", 5, "givenName", "Changed")[0]
    lines = (school / "enrollments.csv").read_text().splitlines(keepends=True)
    removed = [line.split(",")[0] for line in lines[-3:]]
    renamed = lines[1].split(",")[0]
    lines = lines[:-3]
    lines[1] = "renamed-enrollment" + lines[1][lines[1].index(",") :]
    (school / "enrollments.csv").write_text("".join(lines))
    sync = import_path(district, school)
    assert sync.changes["enrollments"]["updated"] == 1
    assert sync.changes["enrollments"]["removed"] == 3
    assert sync.changes["users"]["updated"] == 1
    if store.seeks_by_id():
        # The rename, its record's data, the user's, the three removals: all by row ID (one
        # record by key, which is how the one enrollment of the rename's old ID is left).
        assert sought == {"by id": 6, "by key": 0}
    after = _roster_rows(district, "enrollments")
    assert after["renamed-enrollment"] == (before[renamed][0], "active")  # its own row
    assert after[renamed][0] > max(i for i, _ in before.values())  # a new row, tobedeleted
    assert {k for k, (_, s) in after.items() if s == "tobedeleted"} == {renamed, *removed}
    assert {k: v for k, v in after.items() if k not in (renamed, "renamed-enrollment")} == {
        k: (i, "tobedeleted" if k in removed else s) for k, (i, s) in before.items() if k != renamed
    }
    # Every row ID the saved snapshot keeps is its record's; the old ID's row is not known.
    with store.bulk_connection() as cur:
        held = store.snapshot(cur, district.pk).select("entity", "_key", "_rowid")
    saved = _saved_ids(district)
    known = saved.join(held, on=["entity", "_key"], suffix="_db").drop_nulls("_rowid")
    assert known.height == saved.height - 1
    assert (known["_rowid"] == known["_rowid_db"]).all()
    assert saved.filter(pl.col("_key") == renamed)["_rowid"].to_list() == [None]

    # Every ID off by one: each names another record (or none), found out by its key.
    token = roster_token(district.pk)
    shifted = hashes.Snapshot(district.pk, token).frame()
    hashes.save(district.pk, token, shifted.with_columns(pl.col("_rowid") + 1))
    users = _roster_rows(district, "users", "givenName")
    before = _roster_rows(district, "enrollments")
    edit(school / "users.csv", 6, "givenName", "Again")
    user = rows(school / "users.csv")[5][0]
    lines = (school / "enrollments.csv").read_text().splitlines(keepends=True)
    removed += [line.split(",")[0] for line in lines[-2:]]
    (school / "enrollments.csv").write_text("".join(lines[:-2]))
    sought.update({"by id": 0, "by key": 0})
    sync = import_path(district, school)
    assert sync.changes["users"]["updated"] == 1 and sync.changes["enrollments"]["removed"] == 2
    assert _roster_rows(district, "users", "givenName") == {
        k: (i, "Again" if k == user else name) for k, (i, name) in users.items()
    }
    assert users[changed][1] == "Changed"
    assert _roster_rows(district, "enrollments") == {
        k: (i, "tobedeleted" if k in removed else s) for k, (i, s) in before.items()
    }
    if store.seeks_by_id():  # each named another record, or none
        assert sought == {"by id": 3, "by key": 3}
