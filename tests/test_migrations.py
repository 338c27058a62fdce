"""Migrations: the models and their migrations agree, and a roster kept in the one JSON table
of earlier versions moves into its entity tables with every field, metadata and sync stamp."""

import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("roster", "0004_record_district_without_constraint")]


def test_models_and_migrations_agree():
    """A model changed without its migration would leave the database behind it."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def migrate(targets=None) -> None:
    """To `targets`, or else to the latest migrations, as the other tests expect."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets or executor.loader.graph.leaf_nodes())


@pytest.mark.slow
def test_records_of_the_json_table_move_to_their_entity_tables(district):
    migrate(BEFORE)
    try:
        rows = [
            (1, "orgs", "school-1", "active", {"name": "Ashby", "type": "school"}, 11, 5, 5),
            (
                2, "users", "stu-1", "tobedeleted",
                {"givenName": "Ana", "familyName": "Lopez", "metadata": {"homeroom": "4B"}},
                -7, 5, 6,
            ),
            (3, "enrollments", "enr-1", "active", {"userSourcedId": "stu-1", "role": "student"},
             2**62, 6, 6),
        ]  # fmt: skip
        with connection.cursor() as cur:
            for pk, entity, key, status, data, content_hash, first, changed in rows:
                cur.execute(
                    "INSERT INTO roster_record (id, district_id, entity, sourced_id, status, data,"
                    " content_hash, first_seen_sync_id, changed_sync_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [pk, district.pk, entity, key, status, json.dumps(data), content_hash, first,
                     changed],
                )  # fmt: skip
    finally:
        migrate()
    school = records(district, "orgs").get()
    assert (school.pk, school.sourced_id, school.status) == (1, "school-1", "active")
    assert school.data == {
        "name": "Ashby",
        "type": "school",
        "identifier": None,
        "parentSourcedId": None,
    }
    student = records(district, "users").get()
    assert (student.status, student.content_hash) == ("tobedeleted", -7)
    assert (student.first_seen_sync_id, student.changed_sync_id) == (5, 6)
    assert (student.givenName, student.familyName) == ("Ana", "Lopez")
    assert student.metadata == {"homeroom": "4B"}
    enrollment = records(district, "enrollments").get()
    assert enrollment.content_hash == 2**62 and enrollment.metadata is None
    assert (enrollment.userSourcedId, enrollment.role) == ("stu-1", "student")
    assert not records(district, "classes").exists()


@pytest.mark.slow
def test_districts_keep_their_rows_and_get_the_default_quota(district):
    """0005 adds the per-district upload quota to existing districts as "the default"."""
    migrate([("districts", "0004_strict")])
    try:
        with connection.cursor() as cur:
            cur.execute(
                "INSERT INTO districts_district (slug, name, format, fallback_encoding,"
                " quiet_period_seconds, paused, roster_token, created_at, time_zone, strict)"
                " VALUES ('old', 'Old', 'oneroster-1.1', 'cp1252', 300, %s, 7, %s, 'UTC', %s)",
                [False, "2026-01-01 00:00:00+00:00", False],
            )
    finally:
        migrate()
    from django.conf import settings

    from rosterdrop.districts.models import District

    old = District.objects.get(slug="old")
    assert old.upload_quota_bytes is None
    assert old.effective_upload_quota == settings.DISTRICT_QUOTA_BYTES == 20 * 1024**3


@pytest.mark.slow
def test_roster_tokens_move_to_the_roster_app_and_back_with_their_values(district):
    """roster 0006 carries every district's token into the roster app's table (a saved
    snapshot is named by it) and districts 0008 drops the column; undone, the column gets the
    same values back."""
    from rosterdrop.roster.models import RosterToken

    kept = RosterToken.objects.get(pk=district.pk).token
    migrate([("roster", "0005_roster_tables_per_entity")])
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT roster_token FROM districts_district WHERE id = %s", [district.pk])
            assert cur.fetchone()[0] == kept
            cur.execute(
                "INSERT INTO districts_district (slug, name, format, fallback_encoding,"
                " quiet_period_seconds, paused, roster_token, created_at, time_zone, strict,"
                " admins_decide_holds)"
                " VALUES ('old', 'Old', 'oneroster-1.1', 'cp1252', 300, %s, %s, %s, 'UTC', %s, %s)",
                [False, 2**62, "2026-01-01 00:00:00+00:00", False, False],
            )
    finally:
        migrate()
    from rosterdrop.districts.models import District
    from rosterdrop.roster.store import roster_token

    assert roster_token(district.pk) == kept
    assert roster_token(District.objects.get(slug="old").pk) == 2**62
    assert "roster_token" not in {f.name for f in District._meta.get_fields()}


def test_renames_of_earlier_versions_leave_their_old_ids_tobedeleted(district, school):
    """ingest 0011: a rename applied by an earlier version left nothing under the old ID; the
    migration leaves the row a rename leaves now (the old ID tobedeleted as of the renaming
    sync), and a new roster token, so that the next import plans against the roster as it is
    and brings the old ID back as a removed one."""
    from helpers import rows, write

    from rosterdrop.ingest.syncs import import_path
    from rosterdrop.roster.store import roster_token

    assert import_path(district, school).status == "applied"
    table = rows(school / "enrollments.csv")
    old = list(table[1])
    table[1][0] = "renamed-enrollment"
    write(school / "enrollments.csv", table)
    renaming = import_path(district, school)
    assert renaming.changes["enrollments"]["updated"] == 1
    enrollments = records(district, "enrollments")
    left = enrollments.values().get(sourced_id=old[0])
    enrollments.filter(sourced_id=old[0]).delete()  # as an earlier version left the roster
    token = roster_token(district.pk)
    migrate([("ingest", "0010_sent_block_terms_uncompressed")])
    migrate()
    again = enrollments.values().get(sourced_id=old[0])
    assert again | {"id": left["id"]} == left
    assert left["status"] == "tobedeleted" and left["changed_sync_id"] == renaming.pk
    assert roster_token(district.pk) != token
    write(school / "enrollments.csv", [table[0], old, *table[2:]])
    back = import_path(district, school)
    assert back.status == "applied", back.message
    counts = back.changes["enrollments"]
    assert (counts["reactivated"], counts["removed"]) == (1, 1)


def test_keys_and_references_sort_by_bytes_on_either_engine(district):
    """roster 0012: on PostgreSQL each source ID and each reference to one is compared byte
    by byte (collation "C", the unique keys' builds cheaper), as SQLite compares every text,
    whatever the database's own collation; an ordering by source ID is the same on both."""
    from rosterdrop.roster.models import MODELS, KeyField, RefField

    keyed = [
        (model._meta.db_table, field.column)
        for model in MODELS.values()
        for field in model._meta.fields
        if isinstance(field, (KeyField, RefField))
    ]
    assert ("roster_enrollment", "sourced_id") in keyed
    assert ("roster_enrollment", "userSourcedId") in keyed
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_name LIKE 'roster\\_%%' AND collation_name = 'C'"
            )
            assert sorted(cur.fetchall()) == sorted(keyed)
    keys = ["b", "B", "a-2", "a-10", "Ä", "z", "é", "_x", "1"]
    MODELS["orgs"].objects.bulk_create(
        MODELS["orgs"](
            district=district, sourced_id=key, content_hash=0, first_seen_sync_id=1,
            changed_sync_id=1,
        )
        for key in keys
    )  # fmt: skip
    found = list(
        records(district, "orgs").order_by("sourced_id").values_list("sourced_id", flat=True)
    )
    assert found == sorted(keys, key=lambda key: key.encode())
