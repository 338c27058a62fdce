"""A first import on PostgreSQL copies its records into their tables while it reads its files
(roster/store.py `Loader`), inside the sync's one transaction: the same roster as a plain apply
after the read, and nothing of it visible or kept if the import fails half way."""

import json
import threading
import time
from itertools import pairwise
from pathlib import Path

import polars as pl
import psycopg
import pytest
from conftest import DISTRICT_LARGE
from helpers import rows, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop import timing
from rosterdrop.feed.events import read
from rosterdrop.ingest import decode, engine
from rosterdrop.ingest.columns import HASH, KEY, ROW
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster import store
from rosterdrop.roster.models import MODELS, records
from rosterdrop.roster.schema import FIELDS, METADATA

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgresql_only(db, monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's COPY beside the read (SQLite applies after its read)")
    # Every first import, however small its files, copies while it reads.
    monkeypatch.setattr(engine, "LOAD_WHILE_READING_BYTES", 0)
    yield
    # Its reference lookups are built after the sync (ingest/index_builds.py): built here, so
    # that the next tests find them as a served district has them.
    store.build_missing_indexes()


@pytest.fixture
def stages(monkeypatch) -> list[str]:
    """The labels of the stages run from now on (rosterdrop.timing)."""
    seen: list[str] = []
    monkeypatch.setattr(timing, "LISTENERS", [lambda label, seconds, batch: seen.append(label)])
    return seen


def roster(district) -> dict[str, list[tuple]]:
    """Every record of the district as it stands, without its row ID, by entity."""
    columns = ["sourced_id", "status", "content_hash", METADATA]
    return {
        entity: sorted(records(district, entity).values_list(*columns, *FIELDS[entity]), key=str)
        for entity in MODELS
    }


def created(district) -> list[tuple[str, str, str]]:
    events = read(district.pk, 0, 10**6)
    return sorted((e["entity"], e["sourced_id"], e["action"]) for e in events)


def test_a_first_import_copied_while_read_is_the_roster_a_plain_apply_makes(
    district, other, stages
):
    sync = import_path(district, DISTRICT_LARGE)
    assert sync.status == "applied"
    assert "finish load" in stages  # copied while read: the tables were empty
    stages.clear()
    plain = import_path(other, DISTRICT_LARGE)  # the tables hold the first district's
    assert plain.status == "applied"
    assert "finish load" not in stages
    assert sync.changes == plain.changes
    assert roster(district) == roster(other)
    assert created(district) == created(other)
    for entity in MODELS:
        ids = records(district, entity).values_list("id", flat=True)
        if ids:  # in one run: the feed keeps the sync's created events as a range
            assert max(ids) - min(ids) + 1 == len(ids), entity


def test_a_batch_is_copied_in_key_order_and_the_table_is_in_id_order(district, stages, monkeypatch):
    """Each batch's records reach the table sorted by key, taking the batch's row IDs in that
    order: PostgreSQL's build of the unique key after the read then sorts runs that are sorted
    already, and those of the reading indexes rows in ID order (store.Loaded)."""
    from django.db import connection

    monkeypatch.setattr(decode, "CHUNK", 1 << 20)  # enrollments.csv in several batches
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    copies = stages.count("db insert")
    assert copies > len(MODELS)
    with connection.cursor() as cur:
        for entity, model in MODELS.items():
            cur.execute(f"SELECT id, sourced_id FROM {model._meta.db_table} ORDER BY ctid")
            found = cur.fetchall()
            ids, keys = [i for i, _ in found], [k for _, k in found]
            assert ids == sorted(ids), entity
            # Out of key order only where a batch ends and the next begins.
            assert sum(a > b for a, b in pairwise(keys)) < copies, entity


def test_a_copy_is_sent_by_a_thread_of_its_own_through_a_bounded_queue(district, monkeypatch):
    """The copying thread hands each COPY's CSV to a writer of its own (store._Sending) over
    psycopg's public LibpqWriter, whose thread sends it; at most COPY_BLOCKS blocks wait for
    the server (psycopg's QueuedLibpqWriter queues 1024: `huge`'s peak past 1.5 GB)."""
    from psycopg.copy import LibpqWriter

    made: list[store._Sending] = []
    senders: set[str] = set()

    class Noted(store._Sending):
        def __init__(self, writer, *args, **kwargs):
            assert type(writer) is LibpqWriter
            super().__init__(writer, *args, **kwargs)
            made.append(self)

    send = LibpqWriter.write

    def noted(self, data):
        senders.add(threading.current_thread().name)
        return send(self, data)

    monkeypatch.setattr(store, "_Sending", Noted)
    monkeypatch.setattr(LibpqWriter, "write", noted)
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    assert len(made) >= 2  # a COPY per copied entity
    assert {s.queue.maxsize for s in made} == {store.COPY_BLOCKS}
    assert "rosterdrop-copy" in senders
    assert "rosterdrop-load" not in senders  # the copying thread never waits to send
    assert records(district, "enrollments").count() > 0


def test_the_snapshot_knows_the_row_id_of_every_record_copied(
    district, school, stages, monkeypatch
):
    """A first import copied while read tells its snapshot each record's row ID (store.Loaded:
    a batch's IDs given in key order, those of the rows the checks refused deleted), as the
    database holds it: the next sync seeks the records it updates and removes by them."""
    from rosterdrop.roster import hashes

    monkeypatch.setattr(decode, "CHUNK", 1 << 14)  # enrollments.csv in several batches
    enrollments = rows(school / "enrollments.csv")
    nobody = list(enrollments[2])
    nobody[enrollments[0].index("sourcedId")] = "enrollment-of-nobody"
    nobody[enrollments[0].index("userSourcedId")] = "no-such-user"
    write(school / "enrollments.csv", [*enrollments[:40], nobody, *enrollments[40:]])
    assert import_path(district, school).status in ("applied", "applied_with_errors")
    assert "finish load" in stages and stages.count("db insert") > len(MODELS)
    token = store.roster_token(district.pk)
    saved = hashes.Snapshot(district.pk, token).frame().select("entity", "_key", "_rowid")
    with store.bulk_connection() as cur:
        held = store.snapshot(cur, district.pk).select("entity", "_key", "_rowid")
    assert saved["_rowid"].null_count() == 0
    assert sorted(saved.rows()) == sorted(held.rows())


def test_the_feed_is_told_a_copied_tables_created_records(district, monkeypatch):
    """A table copied whole holds the sync's records under one run of IDs from the Loader's
    first: the feed keeps their range from what apply tells it, without counting the table,
    which has no index of the records first seen yet (a scan: ~1.1 s of server CPU at
    `huge`)."""
    from rosterdrop.feed import events

    told: dict[str, tuple[int, int] | None] = {}
    real = events._created

    def spy(cur, district_id, sync_id, entity, after, *known):
        told[entity] = known[0] if known else None
        return real(cur, district_id, sync_id, entity, after, *known)

    monkeypatch.setattr(events, "_created", spy)
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    for entity in MODELS:
        ids = list(records(district, entity).values_list("id", flat=True))
        if ids:
            assert told[entity] == (min(ids), len(ids)), entity


def test_the_rows_the_checks_refuse_are_not_kept(district, other, school, stages):
    enrollments = rows(school / "enrollments.csv")
    header, first = enrollments[0], enrollments[1]
    twice = [*first[:1], *first[1:]]
    twice[header.index("role")] = (
        "student" if first[header.index("role")] != "student" else "teacher"
    )
    nobody = list(enrollments[2])
    nobody[header.index("sourcedId")] = "enrollment-of-nobody"
    nobody[header.index("userSourcedId")] = "no-such-user"
    write(school / "enrollments.csv", [*enrollments, twice, nobody])
    sync = import_path(district, school)
    assert "finish load" in stages
    plain = import_path(other, school)
    assert sync.status == plain.status
    assert sync.changes == plain.changes
    assert roster(district) == roster(other)
    assert created(district) == created(other)
    assert not records(district, "enrollments").filter(sourced_id="enrollment-of-nobody")
    assert records(district, "enrollments").filter(sourced_id=first[0]).count() == 1


def indexes() -> dict[str, set[str]]:
    """Each roster table's indexes and constraints (a first import drops them, to build them
    after its rows are in)."""
    from django.db import connection

    with connection.cursor() as cur:
        return {
            entity: set(connection.introspection.get_constraints(cur, model._meta.db_table))
            for entity, model in MODELS.items()
        }


def test_a_copied_table_has_its_unique_key_at_the_commit_and_its_other_indexes_after(district):
    """The sync builds again only the unique key of a table it copied into: a source ID is
    one record from its commit on. Its reading indexes, like its lookups, are built after it,
    concurrently (store.build_missing_indexes): the sync reads none of its records through
    them."""
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    committed = indexes()
    copied = [entity for entity in MODELS if records(district, entity).exists()]
    assert "enrollments" in copied
    for entity in copied:
        meta = MODELS[entity]._meta
        declared = {i.name for i in meta.indexes} | {c.name for c in meta.constraints}
        assert declared & committed[entity] == {c.name for c in meta.constraints}, entity
    store.build_missing_indexes()
    built = indexes()
    for entity in copied:
        assert {i.name for i in MODELS[entity]._meta.indexes} <= built[entity], entity


def test_a_copied_entity_is_not_spilled(district, other, monkeypatch):
    """A copied entity's records go to its table only, not to its spill too (apply asks the
    spill only how many there were); an entity left to apply is spilled as before."""
    import re

    from rosterdrop.ingest import spill

    opened: set[str] = set()
    new_file = spill.pa.ipc.new_file

    def noted(sink, schema):
        named = Path(sink).name if isinstance(sink, str) else ""  # a spill names its file
        if found := re.fullmatch(r"(\w+)-\d{3}\.arrow", named):
            opened.add(found[1])
        return new_file(sink, schema)

    monkeypatch.setattr(spill.pa.ipc, "new_file", noted)
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    copied = {entity for entity in MODELS if records(district, entity).exists()}
    assert "enrollments" in copied
    assert not opened & copied
    assert import_path(other, DISTRICT_LARGE).status == "applied"  # the tables hold records
    assert copied <= opened


def test_a_first_import_failing_half_way_leaves_nothing_visible_nor_kept(district, school, stages):
    """Stopped in its last file, after records were copied: no record seen by another
    connection, then or after, every index back, and the files import again."""
    from django.db import connection

    params = connection.get_connection_params()
    seen: list[int] = []
    before = indexes()

    def stop(name: str, read_so_far: int) -> None:
        if name != "enrollments.csv":
            return
        deadline = time.monotonic() + 30
        while "db insert" not in stages:  # records copied in the import's transaction
            assert time.monotonic() < deadline, "no record was copied while reading"
            time.sleep(0.01)
        with psycopg.connect(**params, autocommit=True) as other:
            # The tables copied into are locked to the commit: another reader waits.
            other.execute("SET lock_timeout = '100ms'")
            for model in MODELS.values():
                try:
                    found = other.execute(f"SELECT count(*) FROM {model._meta.db_table}")
                    seen.append(found.fetchone()[0])
                except psycopg.errors.LockNotAvailable:
                    continue
        raise RuntimeError("stopped half way")

    failed = import_path(district, school, progress=stop)
    assert failed.status == "failed"
    assert sum(seen) == 0
    with psycopg.connect(**params) as other:
        for model in MODELS.values():
            assert other.execute(f"SELECT count(*) FROM {model._meta.db_table}").fetchone() == (0,)
    assert indexes() == before
    again = import_path(district, school)
    assert again.status == "applied"
    assert records(district, "enrollments").count() == len(rows(school / "enrollments.csv")) - 1


def test_a_fatal_file_after_the_records_were_copied_keeps_none(district, school, stages):
    enrollments = rows(school / "enrollments.csv")
    broken = [
        [c for i, c in enumerate(r) if i != enrollments[0].index("sourcedId")] for r in enrollments
    ]
    write(school / "enrollments.csv", broken)
    before = indexes()
    failed = import_path(district, school)
    assert failed.status == "failed"
    assert "db insert" in stages
    for entity in MODELS:
        assert not records(district, entity).exists(), entity
    assert indexes() == before


def test_a_first_imports_records_are_copied_in_binary(district, monkeypatch):
    """The Loader's COPY is in PostgreSQL's binary format (store._Copying, encoded by pgpq):
    each statement's data begins with binary COPY's signature, not with CSV."""
    first: list[bytes] = []

    class Noted(store._Sending):
        def write(self, data):
            if len(first) < len(made):
                first.append(bytes(memoryview(data)[:11]))
            return super().write(data)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    made: list[store._Sending] = []
    monkeypatch.setattr(store, "_Sending", Noted)
    assert import_path(district, DISTRICT_LARGE).status == "applied"
    assert len(made) >= 2
    assert first == [b"PGCOPY\n\xff\r\n\x00"] * len(made)


# Values the CSV for COPY had to quote or escape, and what a length-prefixed binary value could
# get wrong: the empty string against NULL, quotes, backslashes, COPY's text markers, separators,
# line ends inside a value, non-ASCII, dates and booleans as the files spell them, long values.
TRICKY = [
    "", " ", '"', '""', "'", "\\", "\\N", "\\.", "NULL", "null", "a,b", ",", "a\tb", "\t",
    "a\nb", "a\r\nb", "\r", "\n", "é", "Zoë Ångström", "日本語", "💥", "2025-08-15",
    "2025-08-15T00:00:00Z", "true", "false", "TRUE", "0", "-1", "1e5", " padded ",
    "x" * 70_000, "é" * 20_000,
]  # fmt: skip
VALUE = st.one_of(
    st.none(),
    st.sampled_from(TRICKY),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
METADATA_VALUE = st.one_of(
    st.none(),
    st.dictionaries(TEXT, st.one_of(st.none(), TEXT, st.integers(), st.booleans()), max_size=4).map(
        lambda d: json.dumps(d, ensure_ascii=False)
    ),
)
USER_RECORDS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from([t for t in TRICKY if t and len(t) <= 255]), TEXT.filter(bool)),
        st.integers(-(2**63), 2**63 - 1),
        st.lists(VALUE, min_size=len(FIELDS["users"]), max_size=len(FIELDS["users"])),
        METADATA_VALUE,
    ),
    min_size=1,
    max_size=12,
    unique_by=lambda r: r[0],
).filter(lambda rs: all(len(r[0]) <= 255 for r in rs))


def users_frame(found: list) -> pl.DataFrame:
    """Spilled users records as the reader hands them to the Loader."""
    return pl.DataFrame(
        {
            KEY: [r[0] for r in found],
            **{f: [r[2][i] for r in found] for i, f in enumerate(FIELDS["users"])},
            METADATA: [r[3] for r in found],
            HASH: [r[1] for r in found],
            ROW: list(range(len(found))),
        },
        schema={
            KEY: pl.String,
            **dict.fromkeys(FIELDS["users"], pl.String),
            METADATA: pl.String,
            HASH: pl.Int64,
            ROW: pl.UInt32,
        },
    )


def written(district, frame: pl.DataFrame, *, loader: bool) -> list[tuple]:
    """What the Loader's binary COPY (or apply's CSV COPY) writes for `frame`, read back as
    text (jsonb normalised by the server), then rolled back."""
    from django.db import transaction

    names = ["sourced_id", "status", "content_hash", "district_id", "first_seen_sync_id"]
    names += ["changed_sync_id", "metadata::text", *(f'"{f}"' for f in FIELDS["users"])]
    with store.bulk_connection() as cur:
        if loader:
            load = store.Loader(cur, district.pk, 7, ROW)
            try:
                assert load("users", frame)  # taken: the table is empty
                load.finish()
            finally:
                load.close()
        else:
            constants = store.new_record_columns(district.pk, 7)
            store._load(cur, store.table("users"), store.new_rows("users", frame), constants)
        cur.execute(f"SELECT {', '.join(names)} FROM roster_user ORDER BY sourced_id")
        found = cur.fetchall()
        transaction.set_rollback(True)
    return found


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(found=USER_RECORDS)
def test_binary_copy_writes_what_the_csv_copy_wrote(district, found):
    """The same records through the Loader's binary COPY and through the CSV COPY that wrote
    them before (and still writes a plain apply's): the same values, NULLs and types."""
    frame = users_frame(found)
    binary = written(district, frame, loader=True)
    assert binary == written(district, frame, loader=False)
    assert len(binary) == len(found)
    by_key = {r[0]: r for r in found}
    for row in binary:  # and what was sent, not only the same on both sides
        sent = by_key[row[0]]
        assert row[2] == sent[1]
        assert list(row[7:]) == sent[2]
        assert (row[6] is None) == (sent[3] is None)
