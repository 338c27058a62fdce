"""SIS search answers from the index built at import (ingest.sent_index): the same rows, line
numbers and counts as reading the file did, reading only the rows it shows (ranged reads on
S3); the index goes with the raw upload at retention."""

import datetime
import zipfile

import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import rows, write
from web_fixtures import signed_in

from rosterdrop.inbox import retention, storage
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import sent_index
from rosterdrop.ingest.models import SentBlock, SentFile
from rosterdrop.ingest.sent_rows import read_rows
from rosterdrop.ingest.syncs import import_path
from rosterdrop.web.sis import indexed_rows, members

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(district, school, monkeypatch):
    """The small school with a student named with accents, and a row holding a line break in a
    quoted cell (so that rows and physical lines differ), imported in blocks of 16 rows."""
    monkeypatch.setattr(sent_index, "BLOCK", 16)
    table = rows(school / "users.csv")
    given, family = table[0].index("givenName"), table[0].index("familyName")
    table[3][given], table[3][family] = "Amélie", "Ünal-Straße"
    table[5][table[0].index("sms")] = "first line\nsecond line"
    write(school / "users.csv", table)
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
    }  # not enrollments, demographics: they name no one


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


def test_the_page_reads_only_the_rows_it_shows(s3, sent, district, admin):
    """Every read of the raw upload is a ranged one, of a few rows: the file is never read
    whole for a search (it was, and fetched from S3 first, on every request)."""
    upload, table = sent
    reads: list[dict] = []
    client = storage.backend().client
    client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **kw: reads.append(dict(params))
    )
    page = signed_in(admin).get(
        reverse("web:sis", args=[district.slug]),
        {"upload": upload.pk, "file": "users.csv", "q": table[6][0].upper()},
    )
    text = page.content.decode()
    assert "1 row containing" in text and table[6][0] in text and '<td class="num">8</td>' in text
    assert reads and all("Range" in r for r in reads), reads
    ranges = [r["Range"].removeprefix("bytes=").split("-") for r in reads]
    read = sum(int(last) - int(first) + 1 for first, last in ranges)
    assert read < upload.size / 4, ranges


def test_a_file_that_names_no_one_is_read_as_before(sent, district, admin):
    upload = Upload.objects.get(district=district, filename="enrollments.csv")
    assert sent_index.indexed(upload, "enrollments.csv") is None
    with members(upload) as files:
        first = read_rows(files["enrollments.csv"], "cp1252", "", 0, 1)
    page = signed_in(admin).get(
        reverse("web:sis", args=[district.slug]), {"upload": upload.pk, "file": "enrollments.csv"}
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
