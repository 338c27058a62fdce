"""What happens next, and health: scheduled pauses keep files waiting and import them in
order when they end; "Import now" skips the quiet period; a district with no file for longer
than its expected cadence is flagged late."""

import zipfile
from datetime import UTC, date, datetime, timedelta

import pytest
from django.utils import timezone
from web_fixtures import signed_in

from rosterdrop.districts.models import Pause
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import receive
from rosterdrop.intake import worker
from rosterdrop.web.status import glance

pytestmark = pytest.mark.django_db(transaction=True)


def zipped(folder, path):
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)
    return path


def test_a_paused_district_receives_and_imports_in_order_when_the_pause_ends(
    district, school, tmp_path, operator
):
    today = timezone.localdate()
    web = signed_in(operator)
    web.post("/d/springfield/pauses/", {"starts_on": today - timedelta(days=1),
             "ends_on": today + timedelta(days=60), "reason": "summer"})  # fmt: skip
    pause = Pause.objects.get(district=district)
    first = receive(district, "a.zip", zipped(school, tmp_path / "a.zip"), "sftp", login="x")
    (school / "orgs.csv").write_text((school / "orgs.csv").read_text().replace("Elementary", "El."))
    second = receive(district, "b.zip", zipped(school, tmp_path / "b.zip"), "sftp", login="x")
    worker.run_once()
    assert not district.syncs.exists()
    assert glance(district).label == f"Paused until {pause.ends_on:%b %-d} (2 files waiting)"
    with (tmp_path / "a.zip").open("rb") as f:
        refused = web.post("/d/springfield/upload/", {"files": [f]}, follow=True)
    assert "This district is paused" in refused.text and Upload.objects.count() == 2
    web.post(f"/d/springfield/pauses/{pause.pk}/remove/")
    worker.run_once()
    syncs = list(district.syncs.order_by("id"))
    assert [list(s.uploads.all()) for s in syncs] == [[first], [second]]
    assert syncs[1].changes["orgs"]["updated"] == 1  # the later file applied last


def test_a_pause_covers_its_days_in_the_district_time_zone(district):
    district.time_zone = "Pacific/Auckland"  # UTC+12/13: its day starts before UTC's
    district.save()
    Pause.objects.create(district=district, starts_on=date(2026, 7, 2), ends_on=date(2026, 7, 3))
    noon_utc_1st = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
    assert district.paused_at(noon_utc_1st)  # 00:30 on the 2nd in Auckland
    assert not district.paused_at(noon_utc_1st - timedelta(hours=1))


def test_import_now_skips_the_quiet_period(district, school, admin):
    district.quiet_period_seconds = 3600
    district.save()
    for path in sorted(school.iterdir()):
        receive(district, path.name, path, "sftp", login="x")
    worker.run_once()
    assert not district.syncs.exists()
    assert glance(district).label.startswith("Waiting: imports at")
    page = signed_in(admin).get("/d/springfield/").text
    assert 'id="import-now"' in page
    signed_in(admin).post("/d/springfield/import-now/")
    worker.run_once()
    [sync] = district.syncs.all()
    assert sync.status == "applied"
    # A file that comes after the click waits for its quiet period again.
    receive(district, "users.csv", school / "users.csv", "sftp", login="x")
    worker.run_once()
    assert district.syncs.count() == 1


def test_a_district_quiet_past_its_cadence_is_flagged_late(district, school):
    upload = receive(district, "users.csv", school / "users.csv", "sftp", login="x")
    Upload.objects.filter(pk=upload.pk).update(
        status="imported", received_at=timezone.now() - timedelta(hours=26)
    )
    assert glance(district).label == "Late: no file for 26 h, expected nightly"
    district.expected_every_hours = 168
    district.save()
    assert glance(district).state != "late"
    district.expected_every_hours = None
    district.save()
    assert glance(district).state != "late"


def test_district_pages_show_times_in_the_district_time_zone(district, school, admin):
    upload = receive(district, "users.csv", school / "users.csv", "sftp", login="x")
    noon = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    Upload.objects.filter(pk=upload.pk).update(received_at=noon)
    district.time_zone = "America/Chicago"
    district.save()
    page = signed_in(admin).get("/d/springfield/uploads/").text
    assert "2026-07-01 07:00:00" in page and "America/Chicago time" in page


def test_counts_have_thousands_separators_and_pages_say_next(district, school, admin):
    from types import SimpleNamespace

    from django.template.loader import render_to_string

    changes = {"users": {"added": 1690, "updated": 12000, "removed": 2500, "reactivated": 0}}
    html = render_to_string(
        "web/_counts.html",
        {"sync": SimpleNamespace(changes=changes), "moves": ("added", "updated", "removed")},
    )
    assert "+1,690" in html and "12,000" in html and "−2,500" in html
    for n in range(51):
        receive(district, f"x{n}.csv", school / "orgs.csv", "sftp", login="x")
    page = signed_in(admin).get("/d/springfield/uploads/").text
    assert "Next →" in page and "Page 1 of 2" in page


def test_sync_durations_are_in_seconds(district, school, admin):
    from rosterdrop.ingest.models import Sync
    from rosterdrop.ingest.syncs import import_path

    sync = import_path(district, school)
    Sync.objects.filter(pk=sync.pk).update(finished_at=sync.started_at + timedelta(seconds=3.24))
    web = signed_in(admin)
    assert "took 3.2 s" in web.get(f"/d/springfield/syncs/{sync.pk}/").text
    assert "3.2 s" in web.get("/d/springfield/syncs/").text


def test_the_dashboard_chart_has_a_log_axis_dates_and_district_names():
    from types import SimpleNamespace

    from rosterdrop.web.status import chart

    def sync(pk, day, changed, name):
        return SimpleNamespace(
            pk=pk,
            started_at=datetime(2026, 9, day, tzinfo=UTC),
            changes={"users": {"removed": changed}},
            district=SimpleNamespace(name=name),
        )

    long = "Lincoln Consolidated Independent School District"
    # Newest first, as the view gives them.
    drawn = chart([sync(2, 3, 10, "Elm USD"), sync(1, 1, 1690, long)], {})
    big, small = drawn["bars"]  # oldest left
    assert big.height == drawn["height"] and 0.3 < small.height / big.height < 0.35  # log
    assert [label for label, _ in drawn["ticks"]] == ["1", "10", "100", "1,000"]
    assert [label for _, label in drawn["dates"]] == ["Sep 1", "Sep 3"]
    assert (big.label, small.label) == ("Lincoln Consolidated…", "Elm USD")
