"""A first import on SQLite copies each entity's records into its table once the files that fill
it are read, beside the read of the files after them (ingest/apply.py `Copier`), inside the
sync's one transaction: the same roster as a plain apply after the read, and nothing of it kept
if the import fails after a copy."""

import time

import pytest
from conftest import DISTRICT_LARGE
from helpers import rows, write
from test_load_while_reading import assert_nothing_kept, assert_same_import, imports_again, indexes

from rosterdrop.ingest import apply, engine
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster import staging, store
from rosterdrop.roster.models import MODELS, records

pytestmark = pytest.mark.django_db(transaction=True)
COPIED = "copy beside the read"
# The entities of the OneRoster 1.1 samples read before demographics.csv, the last file.
BEFORE_LAST = {"orgs", "academicSessions", "courses", "classes", "users", "roles", "enrollments"}


@pytest.fixture(autouse=True)
def sqlite_only(copied_while_read):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's copy beside the read (PostgreSQL's: test_load_while_reading)")


@pytest.fixture
def finished(monkeypatch) -> list[str]:
    """The entities whose copied records apply finished (store.finish_load)."""
    seen: list[str] = []
    real = store.finish_load

    def finish_load(cur, entity, loaded, added):
        seen.append(entity)
        return real(cur, entity, loaded, added)

    monkeypatch.setattr(store, "finish_load", finish_load)
    return seen


def plainly(monkeypatch) -> None:
    """Imports from now on apply after their read, as before the Copier."""
    monkeypatch.setattr(engine, "LOAD_WHILE_READING_BYTES", 1 << 62)


@pytest.mark.parametrize("staged", [False, True])
def test_a_first_import_copied_beside_its_read_is_the_roster_a_plain_apply_makes(
    district, other, stages, finished, monkeypatch, staged
):
    if staged:  # the users, roles and enrollments through staged files, their lookups dropped
        monkeypatch.setattr(apply, "STAGE_MIN_ROWS", 2_000)
        monkeypatch.setattr(store, "DEFER_LOOKUPS_MIN", 2_000)
    sync = import_path(district, DISTRICT_LARGE)
    assert sync.status == "applied"
    # Every entity but the last file's (demographics), copied before the plan.
    assert set(finished) == BEFORE_LAST
    assert stages.count(COPIED) == len(finished)
    assert stages.index(COPIED) < stages.index("apply_plan")
    plainly(monkeypatch)
    finished.clear()
    plain = import_path(other, DISTRICT_LARGE)
    assert plain.status == "applied"
    assert not finished
    assert_same_import(sync, district, plain, other)
    for entity in MODELS:
        # In key order, in one run: the feed keeps the sync's created events as a range.
        found = list(records(district, entity).order_by("id").values_list("id", "sourced_id"))
        ids, keys = [i for i, _ in found], [k for _, k in found]
        assert keys == sorted(keys), entity
        assert not ids or max(ids) - min(ids) + 1 == len(ids), entity


def test_the_rows_the_checks_refuse_are_deleted_after_the_plan(district, other, school, finished):
    enrollments = rows(school / "enrollments.csv")
    header = enrollments[0]
    nobody = list(enrollments[2])
    nobody[header.index("sourcedId")] = "enrollment-of-nobody"
    nobody[header.index("userSourcedId")] = "no-such-user"
    write(school / "enrollments.csv", [*enrollments, nobody])
    sync = import_path(district, school)
    assert "enrollments" in finished  # copied with the refused one, which went after the plan
    plain = import_path(other, school)
    assert_same_import(sync, district, plain, other)
    assert not records(district, "enrollments").filter(sourced_id="enrollment-of-nobody")


def test_an_entity_repeating_an_id_is_left_to_apply(district, other, school, finished):
    """The unique key refuses the second record of an ID: the entity's copy is rolled back
    and apply writes it as the plan says (the first row of an ID wins)."""
    users = rows(school / "users.csv")
    header = users[0]
    twice = list(users[1])
    twice[header.index("givenName")] = "Again"
    write(school / "users.csv", [*users, twice])
    sync = import_path(district, school)
    assert "users" not in finished and "enrollments" in finished
    plain = import_path(other, school)
    assert_same_import(sync, district, plain, other)
    assert records(district, "users").filter(sourced_id=users[1][0]).count() == 1


def test_an_import_failing_after_entities_were_copied_keeps_none(district, school, stages):
    """Stopped in its last file, after the users, roles and enrollments were copied: nothing
    kept, every index back, and the files import again."""
    before = indexes()
    copied: list[bool] = []

    def stop(name: str, read_so_far: int) -> None:
        if name != "demographics.csv":
            return
        deadline = time.monotonic() + 30
        while stages.count(COPIED) < len(BEFORE_LAST):  # copied in the import's transaction
            assert time.monotonic() < deadline, "the records were not copied while reading"
            time.sleep(0.01)
        copied.append(True)
        raise RuntimeError("stopped half way")

    failed = import_path(district, school, progress=stop)
    assert failed.status == "failed"
    assert copied
    assert_nothing_kept(district, before)
    imports_again(district, school, before)


def test_a_fatal_last_file_after_the_records_were_copied_keeps_none(district, school, stages):
    demographics = rows(school / "demographics.csv")
    column = demographics[0].index("sourcedId")
    write(
        school / "demographics.csv",
        [[c for i, c in enumerate(r) if i != column] for r in demographics],
    )
    before = indexes()
    failed = import_path(district, school)
    assert failed.status == "failed"
    assert COPIED in stages
    assert_nothing_kept(district, before)


def test_apply_sizes_its_staged_parts_for_the_entities_it_writes(district, finished, monkeypatch):
    """The staged files a Copier attached leave apply the rest of SQLite's 10, for the entities
    it writes: counted, the copied ones made the enrollments' parts at `huge` 1.3M rows, not
    900k, and the apply the import's memory peak (1674 MB against 1186)."""
    monkeypatch.setattr(apply, "STAGE_MIN_ROWS", 2_000)
    monkeypatch.setattr(apply, "COPY_MAX_ROWS", 10_000)  # the 31,045 enrollments left to apply
    parts: list[int] = []
    real = staging.stage

    def stage(frame, folder):
        parts.append(frame.height)
        return real(frame, folder)

    monkeypatch.setattr(staging, "stage", stage)
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    assert "users" in finished and "enrollments" not in finished
    # 10 files less the copied users' and roles', less the demographics' one: the enrollments
    # in parts of at least 6,000 rows (whole key ranges of ~1,940: four); the copied entities
    # counted, of at least 8,000 (five ranges).
    assert max(parts) < 8_000
