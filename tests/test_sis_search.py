"""SIS search answers from the index built at import (ingest.sent_index): the same rows, line
numbers and counts as reading the file did, reading only the rows it shows (ranged reads on
S3); the index goes with the raw upload at retention."""

import datetime
import io
import zipfile
from unittest.mock import patch

import hypothesis
import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import rows, write
from hypothesis import given
from hypothesis import strategies as st
from web_fixtures import signed_in

from rosterdrop import storage
from rosterdrop.formats import get_format
from rosterdrop.inbox import retention
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import sent_index
from rosterdrop.ingest.models import SentBlock, SentFile, SentValues
from rosterdrop.ingest.sent_rows import read_rows
from rosterdrop.ingest.syncs import import_path
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


def _same_as_read(district, name: str, queries: tuple[str, ...], offsets: tuple[int, ...]):
    upload = Upload.objects.get(district=district, filename=name)
    with members(upload) as files:
        for query in queries:
            for offset in offsets:
                found = indexed_rows(upload, name, "cp1252", query, offset, 10)
                read = read_rows(files[name], "cp1252", query, offset, 10)
                assert found == read, (query, offset)
    return upload


def test_files_that_name_no_one_are_searched_by_their_ids(backend, sent, district, school):
    """enrollments.csv by its own ID and those it refers to (a user's, a class's, a school's:
    whole, in another case, a part of one, with accents; a part of many IDs, found in rows by
    their own ID, by an ID they refer to, or both), demographics.csv by its ID: the rows,
    lines and counts reading the whole file found, on a page at any offset."""
    enrolled = rows(school / "enrollments.csv")
    user, klass, org = (
        enrolled[40][enrolled[0].index(c)]
        for c in ("userSourcedId", "classSourcedId", "schoolSourcedId")
    )
    queries = ("", "ÉNRÔLÉ-STRASSE", "straße", user.upper(), user[9:23], klass[14:].upper(), org)
    parts = ("A1", "e9", "4c", "zwei-405", enrolled[407][0])
    offsets = (0, 10, 25, 70, 150, 290, 540)
    upload = _same_as_read(district, "enrollments.csv", queries + parts, offsets)
    assert indexed_rows(upload, "enrollments.csv", "cp1252", org, 0, 10).matched == 546
    found = indexed_rows(upload, "enrollments.csv", "cp1252", enrolled[301][0], 0, 10)
    assert found is not None and found.rows == [(303, enrolled[301])]  # after the two-line row
    found = indexed_rows(upload, "enrollments.csv", "cp1252", enrolled[407][0], 0, 10)
    assert found is not None and found.rows == [(410, enrolled[407])]  # after two of them
    many = indexed_rows(upload, "enrollments.csv", "cp1252", "a1", 0, 10)
    assert many is not None and many.matched > 150  # in both: its own ID and those referred to
    people = rows(school / "demographics.csv")
    queries = ("", people[7][0].upper(), people[12][0][4:17], people[20][0][-6:])
    _same_as_read(district, "demographics.csv", queries, (0, 10, 60))


def test_a_zip_member_is_searched_as_read(district, school, tmp_path):
    """A zip's members are indexed too; the rows shown are read from the member (not
    seekable: read forward up to the last of them)."""
    table = rows(school / "users.csv")
    sent = tmp_path / "roster.zip"
    with zipfile.ZipFile(sent, "w", zipfile.ZIP_DEFLATED) as package:
        for path in school.iterdir():
            package.write(path, path.name)
    import_path(district, sent)
    upload = Upload.objects.get(district=district, filename="roster.zip")
    with members(upload) as files:
        for query, offset in (("", 0), ("", 40), (table[30][0], 0), (table[9][9], 0)):
            found = indexed_rows(upload, "users.csv", "cp1252", query, offset, 10)
            assert found == read_rows(files["users.csv"], "cp1252", query, offset, 10)
            assert found.rows


SEARCHED = {
    "users.csv": "sourcedId, username, givenName, familyName, middleName, identifier",
    "enrollments.csv": "sourcedId, classSourcedId, schoolSourcedId, userSourcedId",
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
    assert Upload.objects.filter(district=district, filename="users.csv").count() == 2
    assert SentFile.objects.filter(district=district, name="users.csv").count() == 1
    settings.UPLOAD_RETENTION_DAYS = 1
    purged = retention.purge(timezone.now() + datetime.timedelta(days=2))
    assert len(purged) == Upload.objects.filter(district=district).count()
    assert not SentFile.objects.exists() and not SentBlock.objects.exists()
    assert indexed_rows(upload, "users.csv", "cp1252", table[2][0], 0, 10) is None


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
def test_polars_splits_a_plain_file_as_the_csv_module_reads_it(table, line_end, last, chunk):
    """The index of a file without quotes, parsed by polars chunk by chunk (any size, ragged
    and blank rows, CRLF, characters that casefold to several), is the one the csv module
    made of it: the same rows, lines, offsets and searched cells."""
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
