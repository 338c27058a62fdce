"""Re-sent files: the same bytes, read the same way, against the roster they left, make a
no-change sync with the earlier sync's issues, without being read again."""

import pytest
from helpers import edit

from rosterdrop.ingest import syncs
from rosterdrop.ingest.syncs import import_path

pytestmark = pytest.mark.django_db(transaction=True)


def _issues(sync) -> list[tuple]:
    return list(sync.issues.values_list("severity", "code", "file", "line", "column", "value"))


def _not_read(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the files were read again")

    monkeypatch.setattr(syncs, "run", refuse)


def test_same_files_again_are_recognised_not_read(district, school, monkeypatch):
    edit(school / "enrollments.csv", 7, "beginDate", "9/1/2025")  # one warning to carry over
    first = import_path(district, school)
    assert first.status == "applied" and _issues(first)
    _not_read(monkeypatch)
    again = import_path(district, school)
    assert again.status == "no_changes"
    assert f"same files as sync {first.pk}" in again.message
    assert f"Its issues ({len(_issues(first))}) are listed again." in again.message
    assert _issues(again) == _issues(first)
    assert again.files == first.files and again.format == first.format
    assert again.changes["enrollments"] == {
        "added": 0,
        "updated": 0,
        "removed": 0,
        "reactivated": 0,
        "unchanged": first.changes["enrollments"]["added"],
    }
    assert again.roster_token == first.roster_token
    assert {u.status for u in again.uploads.all()} == {"imported"}
    third = import_path(district, school)  # recognised again, through the repeat itself
    assert f"same files as sync {again.pk}" in third.message


def test_same_files_after_another_change_are_read_again(district, school, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(school, other)
    edit(other / "users.csv", 5, "givenName", "Changed")
    import_path(district, school)
    assert import_path(district, other).status == "applied"
    back = import_path(district, school)  # the roster is not as the first sync left it
    assert back.status == "applied"
    assert back.changes["users"]["updated"] == 1


def test_changed_settings_mean_the_files_are_read_again(district, school):
    import_path(district, school)
    district.fallback_encoding = "latin-1"
    district.save()
    again = import_path(district, school)
    assert again.status == "no_changes"
    assert again.message == "Nothing changed since the last sync."


def test_a_dry_run_or_failed_sync_is_never_repeated(district, school, monkeypatch):
    dry = import_path(district, school, dry_run=True)
    assert dry.status == "applied"
    applied = import_path(district, school)  # read: a dry run left the roster as it was
    assert applied.status == "applied" and applied.changes["users"]["added"] == 79
    (school / "orgs.csv").write_text("nothing,useful\n")
    failed = import_path(district, school)
    assert failed.status == "failed"
    again = import_path(district, school)
    assert again.status == "failed" and "same files" not in again.message
