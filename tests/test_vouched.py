"""Rows the roster vouches for (ingest/vouched.py): a row whose record the roster holds as it
is is not checked again, and the sync finds what checking every row would have found."""

from collections import Counter

import pytest
from helpers import edit, rows_through

from rosterdrop.ingest.syncs import import_path

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def checked(monkeypatch) -> Counter:
    """Rows checked per file, by the row checks proper (not the renames and statuses)."""
    return rows_through(monkeypatch, "check_prepared")


def _in_other_bytes(school) -> None:
    """The same records, in files that are not byte for byte the last ones (so that they are
    read again, not recognised as re-sent): the manifest's line ends switched, CRLF or LF."""
    manifest = school / "manifest.csv"
    text = manifest.read_bytes()
    manifest.write_bytes(
        text.replace(b"\r\n", b"\n") if b"\r\n" in text else text.replace(b"\n", b"\r\n")
    )


def _issues(sync) -> set[tuple]:
    return set(sync.issues.values_list("severity", "code", "file", "line", "column", "value"))


def _rows(path) -> int:
    return len(path.read_text().splitlines()) - 1


def test_rows_the_roster_holds_are_not_checked_again(district, school, checked):
    first = import_path(district, school)
    assert checked["enrollments.csv"] == _rows(school / "enrollments.csv")
    checked.clear()
    _in_other_bytes(school)
    again = import_path(district, school)
    assert again.status == "no_changes"
    assert checked["enrollments.csv"] == 0
    assert checked["classes.csv"] == 0
    assert checked["users.csv"] == _rows(school / "users.csv")  # users.csv also feeds roles
    assert _issues(again) == _issues(first)


def test_a_changed_row_is_checked_and_reported(district, school, checked):
    import_path(district, school)
    edit(school / "enrollments.csv", 7, "beginDate", "2025-13-45")
    checked.clear()
    again = import_path(district, school)
    assert checked["enrollments.csv"] == 1
    assert ("warning", "date_invalid", "enrollments.csv", 7, "beginDate", "2025-13-45") in _issues(
        again
    )


def test_a_row_fixed_last_time_is_fixed_and_reported_again(district, school, checked):
    """Its record is held as fixed (true), its row still says TRUE: not the same."""
    edit(school / "enrollments.csv", 3, "primary", "TRUE")
    first = import_path(district, school)
    warning = ("warning", "boolean_normalised", "enrollments.csv", 3, "primary", "TRUE")
    assert warning in _issues(first)
    checked.clear()
    _in_other_bytes(school)
    again = import_path(district, school)
    assert again.status == "no_changes"
    assert checked["enrollments.csv"] == 1
    assert _issues(again) == _issues(first)


def test_rows_read_another_way_are_all_checked(district, school, checked):
    """Another fallback encoding (or format spec, or rosterdrop version): nothing vouched."""
    import_path(district, school)
    district.fallback_encoding = "latin-1"
    district.save()
    checked.clear()
    _in_other_bytes(school)
    import_path(district, school)
    assert checked["enrollments.csv"] == _rows(school / "enrollments.csv")
    checked.clear()
    _in_other_bytes(school)
    import_path(district, school)  # the last sync was read this way: vouched again
    assert checked["enrollments.csv"] == 0


def test_a_snapshot_rebuilt_from_the_database_vouches_for_nothing(
    district, school, checked, settings
):
    import_path(district, school)
    for path in (settings.DATA_DIR / "roster").glob("*.arrow"):
        path.unlink()
    checked.clear()
    _in_other_bytes(school)
    import_path(district, school)
    assert checked["enrollments.csv"] == _rows(school / "enrollments.csv")
