"""Honest pages (issue 14, item 7): no Python `None` anywhere (an empty cell instead), and a
district's state on the dashboard says what really is the latest thing that happened."""

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from test_vendors_parentsquare import FILES
from web_fixtures import signed_in

from rosterdrop.inbox.store import receive
from rosterdrop.ingest.syncs import import_path
from rosterdrop.intake import worker
from rosterdrop.roster.models import records
from rosterdrop.web.status import glance

pytestmark = pytest.mark.django_db(transaction=True)


def text(page) -> str:
    """What a person reads on a page: no tags, no scripts."""
    html = page.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def nightly(district, tmp_path):
    district.format = "parentsquare"
    district.save()
    folder = tmp_path / "nightly"
    folder.mkdir()
    for name, body in FILES.items():
        (folder / name).write_text(body, encoding="utf-8")
    import_path(district, folder)
    return folder


def test_no_page_prints_none_for_an_empty_value(district, operator, nightly):
    client = signed_in(operator)
    slug = district.slug
    # A class without a code, a student without an email: empty values in the roster.
    assert records(district, "classes").get(sourced_id="S3").data["classCode"] is None
    assert records(district, "users").get(sourced_id="S01").data["email"] is None
    sync = district.syncs.first()
    pages = [
        reverse("web:home"),
        reverse("web:district", args=[slug]),
        reverse("web:uploads", args=[slug]),
        reverse("web:syncs", args=[slug]),
        reverse("web:sync", args=[slug, sync.pk]),
        reverse("web:sis", args=[slug]),
        reverse("web:assistant", args=[slug]),
        reverse("web:record", args=[slug, "users", "S01"]),
        reverse("web:record", args=[slug, "classes", "S3"]),
        reverse("web:record", args=[slug, "users", "P1"]),
    ]
    pages += [reverse("web:roster", args=[slug]) + f"?entity={e}" for e in ("users", "classes")]
    pages += [reverse("web:why", args=[slug]) + f"?id={q}" for q in ("S3", "T30", "P3")]
    for url in pages:
        page = client.get(url)
        assert page.status_code == 200, url
        assert not re.search(r"\bNone\b", text(page)), (url, text(page))


def test_an_applied_with_errors_sync_needs_attention_with_its_error_count(district, nightly):
    sync = district.syncs.first()
    assert sync.status == "applied_with_errors"
    errors = sync.issues.filter(severity="error").count()
    seen = glance(district)
    assert seen.label == f"Needs attention ({errors} errors)" and seen.state != "ok"


def test_a_waiting_file_says_when_it_is_imported(district, nightly):
    district.quiet_period_seconds, district.time_zone = 600, "America/Chicago"
    district.save()
    upload = receive(district, "staff.csv", nightly / "staff.csv", "sftp", login="x")
    due = timezone.localtime(
        upload.received_at + timedelta(seconds=600), ZoneInfo("America/Chicago")
    )
    with timezone.override(district.time_zone):  # as the district's pages show it
        assert glance(district).label == f"Waiting: imports at {due:%H:%M}"


def test_last_upload_failed_only_when_it_is_the_latest_thing_that_happened(district, nightly):
    district.quiet_period_seconds = 0
    district.save()
    receive(district, "notes.txt", nightly / "staff.csv", "sftp", login="x")
    worker.run_once()
    assert glance(district).label == "Last upload failed"
    # The district sends its files again, and a stray file after them: the stray file is
    # unmatched, then the files are imported. The import is the latest thing that happened.
    for path in sorted(nightly.iterdir()):
        receive(district, path.name, path, "sftp", login="x")
    receive(district, "readme.txt", nightly / "staff.csv", "sftp", login="x")
    worker.run_once()
    assert district.syncs.count() == 2  # the same rows again: its issues are still there
    assert district.uploads.first().filename == "readme.txt"  # the last upload, unmatched
    assert glance(district).label.startswith("Needs attention")
