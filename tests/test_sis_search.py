"""SIS search answers from the index built after each import (ingest.sent_index,
ingest.index_builds): the same rows, line numbers and counts as reading the file did (in a file
that names no one, a row's own ID is matched whole or from its start), reading only the rows it
shows (ranged reads on S3); the index goes with the raw upload at retention. A sync is applied
and shown before its index is built, which the page says while it reads the file; a build that
dies is built again, and one that fails changes no sync."""

import contextlib
import datetime
import errno
import hashlib
import io
import logging
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import hypothesis
import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from helpers import rows, write
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from web_fixtures import signed_in

from rosterdrop import storage
from rosterdrop.formats import get_format
from rosterdrop.inbox import retention
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import index_builds, sent_index
from rosterdrop.ingest.models import SentBlock, SentFile, SentKeys, SentValues, Sync
from rosterdrop.ingest.reader import limits
from rosterdrop.ingest.sent_rows import Rows, read_rows
from rosterdrop.ingest.syncs import import_path
from rosterdrop.intake import queue, worker
from rosterdrop.roster.models import records
from rosterdrop.web.sis import indexed_rows, members

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(district, school, monkeypatch):
    """The small school with a student named with accents, an enrollment with an accented ID,
    and rows holding a line break in a quoted cell (so that rows and physical lines differ;
    one in an enrollment's ID),
    imported in blocks of 16 rows read 2 KiB at a time, the IDs they refer to numbered 100
    rows at a time: enrollments.csv's first chunks are
    parsed by polars, those from its quoted line break by the csv module."""
    monkeypatch.setattr(sent_index, "BLOCK", 16)
    monkeypatch.setattr(sent_index, "CHUNK", 2048)
    monkeypatch.setattr(sent_index, "NUMBERED", 100)  # enrollments' IDs: in 6 batches
    table = rows(school / "users.csv")
    given, family = table[0].index("givenName"), table[0].index("familyName")
    table[3][given], table[3][family] = "Amélie", "Ünal-Straße"
    table[5][table[0].index("sms")] = "first line\nsecond line"
    write(school / "users.csv", table)
    enrolled = rows(school / "enrollments.csv")
    enrolled[0].append("metadata.note")
    for row in enrolled[1:]:
        row.append("")
    enrolled[3][0] = "Énrôlé-Straße-7"
    enrolled[300][-1] = "first line\nsecond line"
    enrolled[405][0] = "Zeile\nZwei-405"  # an ID on two lines: the rows after it keep theirs
    write(school / "enrollments.csv", enrolled)
    import_path(district, school)
    index_builds.build()  # as serve's worker or a queue job does after the import
    return Upload.objects.get(district=district, filename="users.csv"), table


QUERIES = ("", "AMÉLIE", "ünal-strasse", "straße", "ünal")


def test_search_finds_the_rows_reading_the_file_found(backend, sent, district):
    """By ID (any case), by name (casefolded: "ß" is "ss"), a part of either, and every row
    with no query, on a page at any offset: as read_rows over the whole file."""
    upload, table = sent
    student_id = table[2][0]
    with members(upload) as files:
        for query in (*QUERIES, student_id.upper(), student_id[3:12]):
            for offset in (0, 10, 25, 70):
                found = indexed_rows(upload, "users.csv", "cp1252", query, offset, 10)
                read = read_rows(files["users.csv"], "cp1252", query, offset, 10)
                assert found == read, (query, offset)
        assert read_rows(files["users.csv"], "cp1252", "ünal", 0, 10).rows[0][0] == 4
    below = indexed_rows(upload, "users.csv", "cp1252", table[8][0], 0, 10)
    assert below is not None and below.rows == [(10, table[8])]  # after the two-line row
    assert {f.name for f in SentFile.objects.filter(district=district)} == {
        "users.csv",
        "classes.csv",
        "courses.csv",
        "orgs.csv",
        "academicSessions.csv",
        "enrollments.csv",
        "demographics.csv",
    }


# How a file that names no one is searched, said here on its own (not taken from the code):
# the columns found in any part, and those found whole or from their start (a row's own ID).
FOUND = {
    "enrollments.csv": ({"classSourcedId", "schoolSourcedId", "userSourcedId"}, {"sourcedId"}),
    "demographics.csv": ({"sourcedId"}, set()),  # demographics' sourcedId is a user's
}


def _as_read(rows: Rows, name: str, query: str, offset: int, limit: int) -> Rows:
    """A page of every row read from a file (`rows`) that FOUND finds `query` in."""
    anywhere, start = FOUND[name]
    needle = query.casefold()

    def holds(row: list[str]) -> bool:
        cells = dict(zip(rows.header, row, strict=False))
        return any(needle in cells.get(c, "").casefold() for c in anywhere) or any(
            cells.get(c, "").casefold().startswith(needle) for c in start
        )

    hits = [(line, row) for line, row in rows.rows if not needle or holds(row)]
    return Rows(header=rows.header, rows=hits[offset : offset + limit], matched=len(hits))


def _same_as_read(district, name: str, queries: tuple[str, ...], offsets: tuple[int, ...]):
    upload = Upload.objects.get(district=district, filename=name)
    with members(upload) as files:
        every = read_rows(files[name], "cp1252", "", 0, 10**9)
    for query in queries:
        for offset in offsets:
            found = indexed_rows(upload, name, "cp1252", query, offset, 10)
            assert found == _as_read(every, name, query, offset, 10), (query, offset)
    return upload


def test_files_that_name_no_one_are_searched_by_their_ids(backend, sent, district, school):
    """enrollments.csv by the IDs it refers to (a user's, a class's, a school's: whole, in
    another case, a part of one) and its rows' own IDs (whole or from their start, with
    accents: not by a part in their middle); a part of many IDs, found in rows by their own
    ID, by an ID they refer to, or both; demographics.csv by its ID (a user's: any part): the
    rows, lines and counts of the whole file read, on a page at any offset."""
    enrolled = rows(school / "enrollments.csv")
    user, klass, org = (
        enrolled[40][enrolled[0].index(c)]
        for c in ("userSourcedId", "classSourcedId", "schoolSourcedId")
    )
    queries = ("", "ÉNRÔLÉ-STRASSE", "straße", user.upper(), user[9:23], klass[14:].upper(), org)
    parts = ("A1", "e9", "4c", "zwei-405", enrolled[407][0], enrolled[50][0][:5])
    offsets = (0, 10, 25, 70, 150, 290, 540)
    upload = _same_as_read(district, "enrollments.csv", queries + parts, offsets)
    assert indexed_rows(upload, "enrollments.csv", "cp1252", org, 0, 10).matched == 546
    found = indexed_rows(upload, "enrollments.csv", "cp1252", enrolled[301][0], 0, 10)
    assert found is not None and found.rows == [(303, enrolled[301])]  # after the two-line row
    found = indexed_rows(upload, "enrollments.csv", "cp1252", enrolled[407][0], 0, 10)
    assert found is not None and found.rows == [(410, enrolled[407])]  # after two of them
    found = indexed_rows(upload, "enrollments.csv", "cp1252", "ÉNRÔLÉ-STRASSE", 0, 10)
    assert found is not None and found.rows == [(4, enrolled[3])]  # its start, casefolded
    assert indexed_rows(upload, "enrollments.csv", "cp1252", "straße", 0, 10).matched == 0
    people = rows(school / "demographics.csv")
    queries = ("", people[7][0].upper(), people[12][0][4:17], people[20][0][-6:])
    _same_as_read(district, "demographics.csv", queries, (0, 10, 60))


def _kept(district, folder: Path, name: str, text: str) -> SentFile:
    """`text` sent as `name` in an upload of the district (not imported), indexed."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    upload = Upload.objects.create(
        district=district,
        filename=name,
        size=path.stat().st_size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        source="cli",
        status="imported",
    )
    spec = get_format(district.format, district.slug)
    sent_index.keep(district, [upload], [path], spec, limits())
    found = sent_index.indexed(upload, name)
    assert found is not None
    return found


ENROLLED = """sourcedId,classSourcedId,schoolSourcedId,userSourcedId,role
enr-1001,class-A,school-1,stu-42,student
enr-1002,class-A,school-1,stu-43,student
ENR-2001,class-B,school-1,stu-42,student
stu-42-x,class-C,school-2,stu-42,student
x-enr-1001,class-D,school-2,stu-44,student
"""


@pytest.mark.parametrize("keyed", [3, 64])
def test_how_a_file_that_names_no_one_is_searched(backend, district, tmp_path, monkeypatch, keyed):
    """In enrollments.csv, the IDs a row refers to are found whole or by any part, in any
    case; a row's own ID whole or from its start, in any case, never by a part in its
    middle; a row found both ways is counted once; rows come in file order, a page at a
    time. In demographics.csv the sourcedId (a user's) is found by any part. (Own IDs four
    to a record, found by their first `keyed` bytes: a prefix spans several records.)"""
    monkeypatch.setattr(sent_index, "KEYS", 4)
    monkeypatch.setattr(sent_index, "KEYED", keyed)
    many = "".join(f"enr-3{n:03d},class-P,school-3,stu-5{n:02d},student\n" for n in range(30))
    sent = _kept(district, tmp_path, "enrollments.csv", ENROLLED + many)
    assert SentKeys.objects.filter(file=sent).count() == 9  # 35 own IDs
    assert not sent.row_terms

    def lines(query: str, offset: int = 0, limit: int = 100) -> tuple[list[int], int]:
        found = sent_index.find(sent, query, offset, limit)
        return [line for line, _ in found.rows], found.matched

    assert lines("enr-1001") == ([2], 1)  # whole; not x-enr-1001, where it is in the middle
    assert lines("ENR-100") == ([2, 3], 2)  # its start, in any case
    assert lines("enr-2001") == ([4], 1)  # sent as ENR-2001
    assert lines("1001") == ([], 0)  # a part of an own ID, not at its start
    assert lines("stu-42") == ([2, 4, 5], 3)  # referred to in 2, 4, 5; 5's own ID starts so too
    assert lines("TU-4") == ([2, 3, 4, 5, 6], 5)  # a part of a user's ID
    assert lines("school-2") == ([5, 6], 2)
    assert lines("ass-") == (list(range(2, 37)), 35)  # a part of every class ID
    assert lines("enr-3", 10, 10) == (list(range(17, 27)), 30)  # the second page of ten
    assert lines("enr-300", 5, 100) == (list(range(12, 17)), 10)
    assert lines("x") == ([6], 1)  # x-enr-1001 from its start; stu-42-x not
    assert lines("") == (list(range(2, 37)), 35)
    people = _kept(
        district, tmp_path, "demographics.csv", "sourcedId,sex\nstu-42,female\nstu-43,male\n"
    )
    assert sent_index.find(people, "TU-4", 0, 10).matched == 2


@pytest.mark.parametrize("keyed", [3, 64])
def test_own_ids_sharing_a_long_start_are_found(district, tmp_path, monkeypatch, keyed):
    """Own IDs that share their first 8 bytes and more (sequential IDs of a district) are
    kept in byte order and found whole or from their start, shorter before longer; the first
    of them at the end of a record that starts with another ID ("10", "11", "2025-...")."""
    monkeypatch.setattr(sent_index, "KEYS", 3)
    monkeypatch.setattr(sent_index, "KEYED", keyed)
    ids = ["2025-2026-enr-000010", "2025-2026-enr-00001", "2025-2026-enr-000011", "2025-2026-ßx"]
    ids += ["2025-2026-enr-0000101", "2025-2026-enr-00002", "2025-2026-enr-00001", "10", "11"]
    text = "sourcedId,userSourcedId\n" + "".join(f"{i},u\n" for i in ids)
    sent = _kept(district, tmp_path, "enrollments.csv", text)
    kept = [t for k in SentKeys.objects.filter(file=sent).order_by("pk") for t in k.terms.split()]
    assert kept == sorted(i.casefold() for i in ids)

    def found(query: str) -> list[str]:
        return [ids[line - 2] for line, _ in sent_index.find(sent, query, 0, 100).rows]

    for query in (*ids, "2025-2026-enr-0000", "2025-2026-", "2025-2026-enr-00001", "2025-2026-SS"):
        assert found(query) == [i for i in ids if i.casefold().startswith(query.casefold())]


# IDs of a few characters, some casefolded to others ("ß" is "ss", "İ" two characters), some
# sharing a start longer than a key (8 bytes) and than the bytes a record's first keeps.
ID = st.builds(
    str.__add__,
    st.sampled_from(["", "", "ab-ab-ab-", "ab-ab-ab-ab"]),
    st.text(st.sampled_from("aAbB-1ßéÉİ"), max_size=4),
)


@hypothesis.settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    table=st.lists(st.tuples(ID, ID, ID, ID), max_size=30),
    quoted=st.booleans(),
    data=st.data(),
)
def test_the_index_finds_the_rows_reading_the_file_finds(district, tmp_path, table, quoted, data):
    """For any enrollments.csv (read by polars, or quoted: by the csv module) and any query
    (a part of one of its IDs in another case, or other text), the index finds the rows
    FOUND says, in file order, each once, and counts them: own IDs (3 to a record, found by
    their first 4 bytes) whole or from their start, the IDs a row refers to by any part."""
    cells = [cell for row in table for cell in row] or [""]
    cell = data.draw(st.sampled_from(cells))
    start = data.draw(st.integers(0, len(cell)))
    part = cell[start : data.draw(st.integers(start, len(cell)))]
    query = data.draw(st.sampled_from([part, part.upper(), part.swapcase()]) | ID)
    text = "".join(
        ",".join(f'"{c}"' if quoted else c for c in row) + "\n"
        for row in [("sourcedId", "classSourcedId", "schoolSourcedId", "userSourcedId"), *table]
    )
    lines = [n + 2 for n, row in enumerate(table) if _holds(row, query)]
    with (  # an index is searched with the sizes it was built with
        patch.object(sent_index, "KEYS", 3),
        patch.object(sent_index, "KEYED", 4),
        patch.object(sent_index, "BLOCK", 4),
        patch.object(sent_index, "VALUES", 3),
        patch.object(sent_index, "CHUNK", 64),
    ):
        sent = _kept(district, tmp_path, "enrollments.csv", text)
        try:
            for offset in (0, 2):
                found = sent_index.find(sent, query, offset, 5)
                assert [line for line, _ in found.rows] == lines[offset : offset + 5]
                assert found.matched == len(lines)
        finally:
            Upload.objects.filter(district=district).delete()
            SentFile.objects.filter(district=district).delete()


def _holds(row: tuple[str, ...], query: str) -> bool:
    """Whether FOUND finds `query` in an enrollment (sourcedId, class, school, user)."""
    needle = query.casefold()
    own, *referred = (cell.casefold() for cell in row)
    return not needle or own.startswith(needle) or any(needle in cell for cell in referred)


def test_a_zip_member_is_searched_as_read(district, school, tmp_path):
    """A zip's members are indexed too; the rows shown are read from the member (not
    seekable: read forward up to the last of them)."""
    table = rows(school / "users.csv")
    sent = tmp_path / "roster.zip"
    with zipfile.ZipFile(sent, "w", zipfile.ZIP_DEFLATED) as package:
        for path in school.iterdir():
            package.write(path, path.name)
    import_path(district, sent)
    index_builds.build()
    upload = Upload.objects.get(district=district, filename="roster.zip")
    with members(upload) as files:
        for query, offset in (("", 0), ("", 40), (table[30][0], 0), (table[9][9], 0)):
            found = indexed_rows(upload, "users.csv", "cp1252", query, offset, 10)
            assert found == read_rows(files["users.csv"], "cp1252", query, offset, 10)
            assert found.rows


SEARCHED = {
    "users.csv": "sourcedId, username, givenName, familyName, middleName, identifier",
    "enrollments.csv": "classSourcedId, schoolSourcedId, userSourcedId, or whose sourcedId"
    " starts with it (a row's own ID is matched whole or from its start)",
    "demographics.csv": "sourcedId",
}


@pytest.mark.parametrize(
    ("name", "line"), [("users.csv", 8), ("enrollments.csv", 7), ("demographics.csv", 7)]
)
def test_the_page_reads_only_the_rows_it_shows(s3, sent, district, admin, school, name, line):
    """Every read of the raw upload is a ranged one, of a few rows: the file is never read
    whole for a search (it was, and fetched from S3 first, on every request; enrollments.csv
    and demographics.csv until they were indexed too). The page says which columns it
    searched (not every cell, as reading the file did)."""
    table = rows(school / name)
    upload = Upload.objects.get(district=district, filename=name)
    reads: list[dict] = []
    client = storage.backend().client
    client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **kw: reads.append(dict(params))
    )
    page = signed_in(admin).get(
        reverse("web:sis", args=[district.slug]),
        {"upload": upload.pk, "file": name, "q": table[6][0].upper()},
    )
    text = page.content.decode()
    assert f"1 row containing “{table[6][0].upper()}” in {SEARCHED[name]}." in text
    assert table[6][0] in text and f'<td class="num">{line}</td>' in text
    assert reads and all("Range" in r for r in reads), reads
    ranges = [r["Range"].removeprefix("bytes=").split("-") for r in reads]
    read = sum(int(last) - int(first) + 1 for first, last in ranges)
    assert read < upload.size / 4, ranges


def test_a_file_without_an_index_is_read_as_before(sent, district, admin):
    upload = Upload.objects.get(district=district, filename="manifest.csv")
    assert sent_index.indexed(upload, "manifest.csv") is None
    with members(upload) as files:
        first = read_rows(files["manifest.csv"], "cp1252", "", 0, 1)
    page = signed_in(admin).get(
        reverse("web:sis", args=[district.slug]), {"upload": upload.pk, "file": "manifest.csv"}
    )
    assert f"{first.matched} rows." in page.content.decode()
    assert first.rows[0][1][0] in page.content.decode()


def test_retention_deletes_the_index_with_the_last_copy_of_the_bytes(
    sent, district, school, settings
):
    upload, table = sent
    import_path(district, school)  # the same bytes again: the index is found, not built twice
    index_builds.build()
    assert Upload.objects.filter(district=district, filename="users.csv").count() == 2
    assert SentFile.objects.filter(district=district, name="users.csv").count() == 1
    settings.UPLOAD_RETENTION_DAYS = 1
    purged = retention.purge(timezone.now() + datetime.timedelta(days=2))
    assert len(purged) == Upload.objects.filter(district=district).count()
    assert not SentFile.objects.exists() and not SentBlock.objects.exists()
    assert indexed_rows(upload, "users.csv", "cp1252", table[2][0], 0, 10) is None


BEING_BUILT = "This upload's search index is being built"


def _sis_page(admin, district, upload: Upload, query: str) -> str:
    page = signed_in(admin).get(
        reverse("web:sis", args=[district.slug]),
        {"upload": upload.pk, "file": upload.filename, "q": query},
    )
    assert page.status_code == 200
    return page.content.decode()


def _index_job(district) -> None:
    """What `serve` or `rosterdrop worker` does after a sync: on PostgreSQL, the queue's index
    job of the district (deferred when the sync's outcome was committed, or by `tend`) run as
    a worker runs it; on SQLite, a pass of serve's worker thread."""
    if connection.vendor != "postgresql":
        assert worker.build_index()
        return
    from procrastinate import JobContext

    [job] = queue.app.job_manager.list_jobs(  # the district's, its lock says
        task=queue.INDEX_TASK, status="todo", lock=f"index:{district.pk}"
    )
    context = JobContext(app=queue.app, job=job, start_timestamp=0, abort_reason=lambda: None)
    queue.build_index(context, district_id=district.pk)


def test_a_sync_is_applied_and_shown_before_its_index_is_built(district, school, admin):
    """The import applies the roster and records its outcome without building the index (it
    did, inline: ~17 s of CPU at huge on SQLite, ~57 s on PostgreSQL); until the job built it
    the page reads the file and says so, then it answers from the index (and says which
    columns it searched)."""
    table = rows(school / "users.csv")
    sync = import_path(district, school)
    assert sync.status == "applied"
    assert records(district, "users").count() == len(table) - 1
    assert not SentFile.objects.exists()
    upload = Upload.objects.get(district=district, filename="users.csv")
    assert index_builds.building(upload)
    before = _sis_page(admin, district, upload, table[6][0])
    assert BEING_BUILT in before
    assert f"1 row containing “{table[6][0]}”." in before and f"{table[6][9]}" in before
    _index_job(district)
    Sync.objects.get(pk=sync.pk, status="applied", index="built")
    assert not index_builds.building(upload) and index_builds.build() == []  # built once
    after = _sis_page(admin, district, upload, table[6][0])
    assert BEING_BUILT not in after
    assert f"1 row containing “{table[6][0]}” in sourcedId" in after and table[6][9] in after


@contextlib.contextmanager
def _building_elsewhere(district) -> Iterator[None]:
    """The district's index build lock held by another build (a thread: on PostgreSQL its
    own connection, on SQLite its own open file) while the block runs."""
    held, done = threading.Event(), threading.Event()

    def build() -> None:
        try:
            with index_builds._lock(district.pk) as taken:
                assert taken
                held.set()
                done.wait(60)
        finally:
            connection.close()

    thread = threading.Thread(target=build)
    thread.start()
    assert held.wait(30)
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_an_index_a_dead_build_left_is_built_once_more(district, school, caplog):
    """A build killed midway leaves its sync `building` and its lock gone with its process:
    the recovery pass (serve's worker thread, the queue's `tend`) builds it again, never
    while a live build holds the lock; a second build that dies too is given up (logged)
    rather than retried at every start."""
    sync = import_path(district, school)
    Sync.objects.filter(pk=sync.pk).update(index="building")  # as a killed build left it
    if connection.vendor == "postgresql":  # the job its commit deferred was taken and lost
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM procrastinate_jobs")
    with _building_elsewhere(district):
        assert index_builds.due_districts() == set()
        assert index_builds.build() == []
    assert index_builds.due_districts() == {district.pk}
    if connection.vendor == "postgresql":
        assert queue.defer_due() == 1  # `tend`: an index job for the district
    _index_job(district)
    assert Sync.objects.get(pk=sync.pk).index == "built"
    assert SentFile.objects.filter(district=district, name="users.csv").exists()
    assert index_builds.due_districts() == set()

    table = rows(school / "users.csv")
    table[3][table[0].index("familyName")] = "Okonkwo"
    write(school / "users.csv", table)
    again = import_path(district, school)
    assert again.status == "applied"
    Sync.objects.filter(pk=again.pk).update(index="again")  # its second build died too
    with caplog.at_level(logging.ERROR, logger="rosterdrop.ingest.index_builds"):
        assert index_builds.build() == [again.pk]
    assert f"the search index of sync {again.pk} is not built" in caplog.text
    assert Sync.objects.get(pk=again.pk).index == "built"
    assert SentFile.objects.filter(district=district, name="users.csv").count() == 1


def test_a_failing_build_is_logged_and_changes_no_sync(
    district, school, admin, monkeypatch, caplog
):
    """The disk filling up while the index is written: inside the import (before), the import
    raised after its roster was applied (recording it failed, "nothing was applied", found
    the sync applied: states.Conflict), and the worker marked its uploads failed."""

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sent_index, "keep", full)
    sync = import_path(district, school)
    assert sync.status == "applied"
    with caplog.at_level(logging.ERROR, logger="rosterdrop.ingest.index_builds"):
        _index_job(district)
    assert f"the search index of sync {sync.pk} was not built" in caplog.text
    after = Sync.objects.get(pk=sync.pk)
    assert (after.status, after.index, after.message) == ("applied", "built", sync.message)
    upload = Upload.objects.get(district=district, filename="users.csv")
    page = _sis_page(admin, district, upload, "")
    assert BEING_BUILT not in page and f"{len(rows(school / 'users.csv')) - 1} rows." in page


def test_a_build_racing_retention_leaves_no_index_of_purged_bytes(
    s3, district, school, settings, monkeypatch
):
    """Retention purges the uploads while their index is written from the build's own copies
    (fetched from S3): what the build wrote after retention forgot them is forgotten too."""
    import_path(district, school)
    keep = sent_index.keep

    def purged_meanwhile(*args):
        settings.UPLOAD_RETENTION_DAYS = 1
        assert retention.purge(timezone.now() + datetime.timedelta(days=2))
        assert not SentFile.objects.exists()  # nothing for retention to forget yet
        keep(*args)
        assert SentFile.objects.exists()

    monkeypatch.setattr(sent_index, "keep", purged_meanwhile)
    assert index_builds.build()
    assert not SentFile.objects.exists() and not SentBlock.objects.exists()
    assert not SentValues.objects.exists()


def test_the_cli_builds_what_a_one_shot_import_left(district, school, capsys):
    """`rosterdrop import` builds no index: `rosterdrop search-index build` does, once."""
    sync = import_path(district, school)
    call_command("search-index", "build", "--district", district.slug)
    assert f"search index built for 1 sync(s) [{sync.pk}]" in capsys.readouterr().out
    assert SentFile.objects.filter(district=district, name="users.csv").exists()
    call_command("search-index", "build")
    assert "search index built for 0 sync(s) in" in capsys.readouterr().out


CELLS = st.text(
    st.characters(codec="utf-8", exclude_characters='\n\r"'), max_size=6
) | st.sampled_from(["ß", "Ǆ", "ﬁ", ""])


@hypothesis.settings(max_examples=150, deadline=None)
@given(
    table=st.lists(st.lists(CELLS, max_size=7), max_size=40),
    line_end=st.sampled_from(["\n", "\r\n"]),
    last=st.booleans(),
    chunk=st.integers(8, 200),
)
# A chunk that starts as zlib data does (0x78 0x01, 0x78 0xDA): polars inflated it (found by
# this test: "corrupt deflate stream", or a cell read as another; rosterdrop/polars_csv.py).
@hypothesis.example(table=[["x\x01", "20"]], line_end="\n", last=True, chunk=8)
@hypothesis.example(table=[["x\x0120"]], line_end="\n", last=True, chunk=8)
@hypothesis.example(table=[["x\u0680"]], line_end="\r\n", last=False, chunk=8)
def test_polars_splits_a_plain_file_as_the_csv_module_reads_it(table, line_end, last, chunk):
    """The index of a file without quotes, parsed by polars chunk by chunk (any size, ragged
    and blank rows, CRLF, characters that casefold to several), is the one the csv module
    made of it: the same rows, lines, offsets and searched cells, values and own IDs."""
    spec = get_format("oneroster-1.1", "x").file("enrollments.csv")
    header = "sourcedId,status,classSourcedId,role,schoolSourcedId,userSourcedId"
    lines = [header, *(",".join(row) for row in table)]
    raw = (line_end.join(lines) + (line_end if last else "")).encode()

    def built(plain):
        records: list[SentBlock | SentValues] = []
        with (
            patch.object(sent_index, "CHUNK", chunk),
            patch.object(sent_index, "_plain", plain),
            patch.object(sent_index, "NUMBERED", 7),
        ):
            index = sent_index._build(io.BytesIO(raw), spec, "cp1252", records.extend)
        assert index is not None
        blocks = [r for r in records if isinstance(r, SentBlock)]
        return (
            index.header_end,
            index.rows,
            [(b.first, bytes(b.lines), bytes(b.offsets), b.terms) for b in blocks],
            _values([r for r in records if isinstance(r, SentValues)]),
            [
                (value, row)
                for r in records
                if isinstance(r, SentKeys)
                for value, row in zip(
                    r.terms.split("\n"), np.frombuffer(r.rows, np.int32).tolist(), strict=True
                )
            ],
        )

    by_polars = built(sent_index._plain)
    assert by_polars == built(lambda chunk: False)
    assert by_polars[1] == len(lines) - 1 - (not last and len(lines) > 1 and lines[-1] == "")


def _values(records: list[SentValues]) -> dict[str, list[int]]:
    """The rows each distinct value is in (its number depends on the chunks read)."""
    found = {}
    for record in records:
        rows = np.frombuffer(record.rows, dtype=np.int32)
        ends = np.frombuffer(record.ends, dtype=np.int32)
        for n, value in enumerate(record.terms.split("\n")):
            found[value] = rows[(ends[n - 1] if n else 0) : ends[n]].tolist()
    return found


def test_a_file_whose_rows_make_no_record_is_not_indexed():
    """SDS 2.1's userFlags.csv is read and checked, never kept: no column is searched in it
    (the page reads it as sent), where the index's columns once failed on it."""
    spec = get_format("sds-v2.1", "x").file("userFlags.csv")
    assert sent_index.searched_in(["userSourcedId", "flag"], spec) == ([], [])
    assert sent_index._build(io.BytesIO(b"userSourcedId,flag\nu1,x\n"), spec, "", print) is None
