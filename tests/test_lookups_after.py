"""A first import's reference indexes (roster.models.LOOKUPS), and its other secondary
ones, built after its sync (roster.store.lookups_built_after, ingest.index_builds), on both
engines: the sync is applied and committed without them, and until they are built every
reader gives the answers it gives with them, the gaps included. Whatever builds them (the
build after the sync, on SQLite also the district's next sync should that build never run)
leaves the same roster. On PostgreSQL the build is concurrent, outside any transaction, and
an index such a build left invalid (it failed, or its process died) is built again by the
next build."""

import io
import threading
import zipfile

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from helpers import edit, rows, write
from test_import import declared_indexes, table_indexes

from rosterdrop.feed import events
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import gaps, index_builds
from rosterdrop.ingest.models import RosterGaps, Sync
from rosterdrop.ingest.syncs import import_path
from rosterdrop.oneroster.package import write_package
from rosterdrop.roster import store
from rosterdrop.roster.models import ENTITIES, LOOKUP_INDEXES, MODELS, records

# Committed as a sync and as the build after it commit: a concurrent build refuses to run in
# a transaction, and whether the sync committed without the indexes is the question.
pytestmark = pytest.mark.django_db(transaction=True)

PROBED = ("roles", "enrollments")


@pytest.fixture
def deferred(monkeypatch):
    """Every first import defers its reference indexes, however few its records; whatever a
    test leaves unbuilt is built after it (the next tests share the schema)."""
    monkeypatch.setattr(store, "DEFER_LOOKUPS_MIN", 1)
    yield
    store.build_missing_indexes()


@pytest.fixture
def with_gaps(school):
    """The school with a student in no class and a class without a teacher."""
    users, enrollments = rows(school / "users.csv"), rows(school / "enrollments.csv")
    student = users[2][0]  # a student's row
    user, klass, role = (
        enrollments[0].index(c) for c in ("userSourcedId", "classSourcedId", "role")
    )
    untaught = enrollments[1][klass]
    kept = [
        row
        for row in enrollments[1:]
        if row[user] != student and not (row[klass] == untaught and row[role] == "teacher")
    ]
    write(school / "enrollments.csv", [enrollments[0], *kept])
    return school


def postgresql() -> bool:
    return connection.vendor == "postgresql"


def lookups(entity: str) -> set[str]:
    return {index.name for index in LOOKUP_INDEXES[entity]}


def unique_key(entity: str) -> set[str]:
    return {constraint.name for constraint in MODELS[entity]._meta.constraints}


def invalid(entity: str) -> set[str]:
    """PostgreSQL: the entity's indexes that queries do not use (a concurrent build left
    them), by name."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisvalid",
            [MODELS[entity]._meta.db_table],
        )
        return {name for (name,) in cur.fetchall()}


def answers(district) -> dict[str, object]:
    """What the readers that use the reference indexes answer: the gaps as the assistant
    gets them, each gap over the whole district, and lookups by reference."""
    kept = gaps.of(district)
    enrollments = records(district, "enrollments")
    some = list(enrollments.order_by("sourced_id").values_list("userSourcedId", "classSourcedId"))
    return {
        "kept": (kept.counts, kept.shown),
        "full": {kind: gaps.in_full(found) for kind, found in gaps.queries(district.pk).items()},
        "by user": [enrollments.filter(userSourcedId=u).count() for u, _ in some[::7]],
        "by class": [
            enrollments.filter(classSourcedId=c, role="student").count() for _, c in some[::7]
        ],
        "roles": [
            records(district, "roles").filter(userSourcedId=u, role="student").count()
            for u, _ in some[::7]
        ],
    }


def seen_elsewhere(sync: Sync) -> tuple[str, int, dict[str, set[str]]]:
    """From another connection: the sync's status, the district's enrollments and each probed
    table's indexes: what is committed."""
    seen: list[tuple[str, int, dict[str, set[str]]]] = []

    def look() -> None:
        try:
            status = Sync.objects.get(pk=sync.pk).status
            count = records(sync.district_id, "enrollments").count()
            seen.append((status, count, {e: table_indexes(e) for e in PROBED}))
        finally:
            connection.close()

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    return seen[0]


def test_a_first_import_leaves_its_reference_indexes_to_after_its_sync(
    district, with_gaps, deferred
):
    sync = import_path(district, with_gaps)
    assert sync.status == "applied"
    status, enrollments, indexes = seen_elsewhere(sync)
    assert (status, enrollments) == ("applied", records(district, "enrollments").count())
    for entity in PROBED:
        assert not lookups(entity) & indexes[entity], entity
        assert not store.lookups_built(entity)
        # Every secondary index dropped for the rows (on PostgreSQL the unique key too,
        # built again in the sync; on SQLite it is part of the table).
        assert declared_indexes(entity) & indexes[entity] == unique_key(entity), entity
    assert not RosterGaps.objects.filter(district=district).exists()
    meanwhile = answers(district)  # gaps.of counts them now, without the indexes
    counts = meanwhile["kept"][0]  # type: ignore[index]
    assert counts["students_without_classes"] and counts["classes_without_teacher"]
    RosterGaps.objects.filter(district=district).delete()  # left for the build to count

    assert index_builds.build(district) == [sync.pk]
    for entity in PROBED:
        assert declared_indexes(entity) <= table_indexes(entity), entity
        assert store.lookups_built(entity), entity
        if postgresql():
            assert not invalid(entity), entity
    counted = RosterGaps.objects.get(district=district)
    assert (counted.sync_id, counted.token) == (sync.pk, store.roster_token(district.pk))
    assert answers(district) == meanwhile


def test_the_lookups_are_built_after_a_sync_whose_build_is_not_wanted(
    district, with_gaps, deferred
):
    """A first import whose uploads are no longer kept when the build after it runs (retention
    purged them): no SIS search index is wanted, but its reference indexes and gaps were left
    to after its sync all the same: the district's build makes them."""
    sync = import_path(district, with_gaps)
    assert sync.status == "applied"
    assert not store.lookups_built("enrollments")
    Upload.objects.filter(syncs=sync).update(stored_path="")
    assert not index_builds.wanted(district).exists()
    assert index_builds.build(district) == []
    for entity in PROBED:
        assert store.lookups_built(entity), entity
        if postgresql():
            assert not invalid(entity), entity
    counted = RosterGaps.objects.get(district=district)
    assert (counted.sync_id, counted.token) == (sync.pk, store.roster_token(district.pk))


def test_the_next_sync_before_the_build_after_a_first_import(district, with_gaps, deferred):
    """The build after the first import never ran (a crash, `rosterdrop import` with no
    worker): on SQLite the next sync builds the indexes in its transaction; on PostgreSQL,
    where that would keep every other district's writes off the table meanwhile, the build
    after it does, concurrently. Either way the gaps kept are a full count's."""
    school = with_gaps
    assert import_path(district, school).status == "applied"
    edit(school / "enrollments.csv", 3, "role", "teacher")
    edit(school / "users.csv", 4, "givenName", "Renamed")
    sync = import_path(district, school)
    assert sync.status == "applied"
    if postgresql():
        for entity in PROBED:
            assert not lookups(entity) & table_indexes(entity), entity
        assert not RosterGaps.objects.filter(district=district).exists()
        assert sync.pk in index_builds.build(district)
    for entity in PROBED:
        assert lookups(entity) <= table_indexes(entity), entity
    kept = RosterGaps.objects.get(district=district)
    assert kept.sync_id == sync.pk
    full = {kind: gaps.in_full(found) for kind, found in gaps.queries(district.pk).items()}
    assert kept.counts == {kind: n for kind, (n, _) in full.items()}
    assert kept.shown == {kind: ids for kind, (_, ids) in full.items()}


def test_postgresql_builds_again_an_index_a_concurrent_build_left_invalid(
    district, with_gaps, deferred
):
    """A concurrent build that stops halfway (here cancelled while it waits for a writer's
    transaction; a build whose process dies leaves the same) leaves its index in the catalog,
    invalid: maintained by writes, used by no query. The next build drops and builds it."""
    import psycopg

    if not postgresql():
        pytest.skip("PostgreSQL's concurrent builds")
    sync = import_path(district, with_gaps)
    meanwhile = answers(district)
    with psycopg.connect(**connection.get_connection_params()) as writer:
        # Holds the table's ROW EXCLUSIVE lock until it ends: a concurrent build waits for it.
        writer.execute("UPDATE roster_enrollment SET status = status WHERE false")
        with connection.cursor() as cur:
            cur.execute("SET statement_timeout = '500ms'")
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                store.build_missing_indexes()
        finally:
            with connection.cursor() as cur:
                cur.execute("RESET statement_timeout")
    assert invalid("enrollments")  # the first index it built, a reading one
    assert not store.lookups_built("enrollments")
    assert answers(district) == meanwhile
    RosterGaps.objects.filter(district=district).delete()  # left for the build to count

    assert index_builds.build(district) == [sync.pk]
    for entity in PROBED:
        assert store.lookups_built(entity) and not invalid(entity), entity
        assert declared_indexes(entity) <= table_indexes(entity), entity
    assert RosterGaps.objects.get(district=district).sync_id == sync.pk
    assert answers(district) == meanwhile


def test_postgresql_gaps_probe_no_table_per_record_while_the_lookups_are_missing(
    district, with_gaps, deferred
):
    """Without the enrollments' lookups PostgreSQL hashes them for the gaps' EXISTS; `NOT IN`
    a subquery (what SQLite is asked meanwhile) would scan its rows once per user or class
    whenever they do not fit in work_mem (at `large`: ~6e9 in EXPLAIN's cost)."""
    if not postgresql():
        pytest.skip("PostgreSQL's plans")
    import_path(district, with_gaps)
    assert not store.lookups_built("enrollments")
    with connection.cursor() as cur:
        # The statistics autovacuum would have made on a real server: with the orgs' (a few
        # rows), `NOT IN` the roles' users was planned as a scan of every role per user.
        for entity in ("orgs", "users", "roles", "agents", "enrollments"):
            cur.execute(f"ANALYZE {store.table(entity)}")
        cur.execute("SET work_mem = '64kB'")  # the school's enrollments do not fit, as at scale
        try:
            for found in gaps.queries(district.pk).values():
                sql, params = found.values_list("sourced_id").query.sql_with_params()
                cur.execute(f"EXPLAIN {sql}", params)
                plan = "\n".join(line for (line,) in cur.fetchall())
                assert "SubPlan" not in plan, plan
        finally:
            cur.execute("RESET work_mem")


def test_postgresql_leaves_the_lookups_to_a_build_running_elsewhere(district, with_gaps, deferred):
    """One concurrent build at a time, and none waits for another: a backend waiting for the
    lock would hold a snapshot, which the running build's CREATE INDEX CONCURRENTLY waits for
    in turn. The gaps are counted meanwhile, without the indexes."""
    import psycopg

    if not postgresql():
        pytest.skip("PostgreSQL's concurrent builds")
    sync = import_path(district, with_gaps)
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as elsewhere:
        elsewhere.execute("SELECT pg_advisory_lock(%s)", [store.BUILD_LOCK])
        assert index_builds.build(district) == [sync.pk]
        assert not store.lookups_built("enrollments")
        assert RosterGaps.objects.get(district=district).sync_id == sync.pk
        # Let go here: a closed connection's backend may end after the next statement.
        elsewhere.execute("SELECT pg_advisory_unlock(%s)", [store.BUILD_LOCK])
    store.build_missing_indexes()
    assert all(store.lookups_built(entity) for entity in PROBED)


def package(district) -> dict[str, bytes]:
    out = io.BytesIO()
    write_package(district, out)
    with zipfile.ZipFile(out) as written:
        return {name: written.read(name) for name in written.namelist()}


def test_the_feed_and_a_package_of_a_first_import_before_its_indexes(
    district, school, deferred, monkeypatch
):
    """Its reading indexes (`_in_order`, `_first_seen`) built after the sync too: the feed is
    told the created records apply appended (not counted through `_first_seen`: on SQLite a
    scan of the table without it), and a package is written without naming `_in_order`; the
    same events and package as once every index is built."""
    told: dict[str, object] = {}
    created = events._created

    def spied(cur, district_id, sync_id, entity, after, known):  # type: ignore[no-untyped-def]
        told[entity] = known
        return created(cur, district_id, sync_id, entity, after, known)

    monkeypatch.setattr(events, "_created", spied)
    sync = import_path(district, school)
    assert sync.status == "applied"
    held = [e for e in ENTITIES if records(district, e).exists()]
    assert {"users", "classes", "enrollments"} <= set(held)
    for entity in held:
        assert declared_indexes(entity) & table_indexes(entity) == unique_key(entity), entity
        if not postgresql():  # PostgreSQL's IDs come from a sequence: counted
            ids = sorted(records(district, entity).values_list("id", flat=True))
            assert told[entity] == (ids[0], len(ids)), entity
    feed = events.read(district.pk, 0, 10**6)
    written = package(district)

    store.build_missing_indexes()
    for entity in held:
        assert declared_indexes(entity) <= table_indexes(entity), entity
    assert events.read(district.pk, 0, 10**6) == feed
    assert package(district) == written
    for entity in held:
        named = {e["sourced_id"] for e in feed if e["entity"] == entity}
        assert named == set(records(district, entity).values_list("sourced_id", flat=True))


def test_which_indexes_are_there_is_asked_with_the_queries_logged(district, school, deferred):
    """With queries logged (DEBUG, CaptureQueriesContext, `force_debug_cursor`), Django's
    cursor formats each statement with its parameters as `%s`: the store's questions of which
    indexes are there (an import's gaps ask whether the lookups are built, a bulk package
    whether it may walk `_in_order`) go through that cursor. A `?` placeholder failed there:
    every SQLite sync under DEBUG."""
    with CaptureQueriesContext(connection) as logged:
        assert import_path(district, school).status == "applied"
        assert not store.lookups_built("enrollments")
        written = package(district)  # asks store.walks_in_order on SQLite
        store.build_missing_indexes()
        assert store.lookups_built("enrollments") and store.walks_in_order("enrollments")
        assert package(district) == written
    catalog = "pg_index" if postgresql() else "sqlite_master"
    assert any(catalog in query["sql"] for query in logged.captured_queries)
