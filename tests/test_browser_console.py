"""The console's daily flows in a real browser (Debian's Chromium driven by Playwright) on a
live server: a district admin decides their own held sync after a confirmation."""

import pytest
from browser_fixtures import CHROMIUM, Console
from test_holds import SCHOOL, held_without_young_students
from web_fixtures import make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


def test_district_admin_approves_their_own_hold_after_confirming(
    browser,
    live_server,
    district,
    school,
):
    sync, gone = held_without_young_students(district, school)
    district.admins_decide_holds = True
    district.save()
    make_user("data@springfield.test", district)
    admin = Console(browser, live_server.url)
    admin.sign_in("data@springfield.test")
    admin.go(f"/d/springfield/syncs/{sync.pk}/?action=removed", shot="40-hold")
    admin.readme_shot("hold")
    said = f"{len(gone)} students, grades KG-1, {SCHOOL}"
    assert admin.page.locator("ul.hold-summary li").first.inner_text() == said
    admin.page.click("text=Approve and apply")
    admin.page.wait_for_selector("#confirm")
    admin.shot("41-hold-confirm")
    sync.refresh_from_db()
    assert sync.status == "held"  # not before the confirmation
    admin.page.click("#confirm-decision")
    admin.wait_for_status("applied")
    assert admin.page.locator("text=decided by data@springfield.test").count() == 1
    admin.context.close()


def test_check_only_shows_the_issues_and_applies_nothing(browser, live_server, district, school):
    from helpers import edit

    from rosterdrop.inbox.models import Upload
    from rosterdrop.ingest.models import Sync
    from rosterdrop.roster.models import records

    make_user("data@springfield.test", district)
    edit(school / "users.csv", 5, "role", "wizard")  # a row error
    admin = Console(browser, live_server.url)
    admin.sign_in("data@springfield.test")
    admin.go("/d/springfield/")
    admin.page.set_input_files("input[name=files]", sorted(str(p) for p in school.iterdir()))
    admin.page.click("#check-only")
    admin.page.wait_for_selector("#check-result")
    admin.shot("42-check-only")
    assert "Would be imported with 9 errors" in admin.page.inner_text("#check-result")
    row = admin.page.locator("#issue-table tr", has_text="wizard")
    assert "users.csv" in row.inner_text() and "5" in row.inner_text()
    assert Upload.objects.count() == Sync.objects.count() == 0
    assert not records(district, "users").exists()
    admin.context.close()


def test_a_paused_district_receives_and_later_applies(
    browser, live_server, district, school, tmp_path
):
    from datetime import timedelta

    from django.utils import timezone
    from test_schedule import zipped

    from rosterdrop.inbox.store import receive
    from rosterdrop.intake import worker

    make_user("ops@vendor.test", operator=True)
    ops = Console(browser, live_server.url)
    ops.sign_in("ops@vendor.test")
    ops.go("/d/springfield/")
    today = timezone.localdate()
    ops.page.fill("input[name=starts_on]", f"{today:%Y-%m-%d}")
    ops.page.fill("input[name=ends_on]", f"{today + timedelta(days=70):%Y-%m-%d}")
    ops.page.fill("input[name=reason]", "summer")
    ops.page.click("text=Schedule pause")
    assert "summer" in ops.page.inner_text("#pauses")
    receive(district, "roster.zip", zipped(school, tmp_path / "roster.zip"), "sftp", login="x")
    worker.run_once()
    ops.go("/d/springfield/", shot="43-paused-district")
    assert "(1 file waiting)" in ops.page.inner_text("#district-state")
    assert not district.syncs.exists()
    ops.page.click("#pauses >> text=Remove")
    worker.run_once()
    ops.go("/d/springfield/syncs/")
    [sync] = district.syncs.all()
    assert sync.status == "applied"
    assert ops.page.locator(f"a[href='/d/springfield/syncs/{sync.pk}/']").count() >= 1
    ops.context.close()


def test_the_dashboard_flags_a_late_district(browser, live_server, district, school, other):
    from datetime import timedelta

    from django.utils import timezone

    from rosterdrop.inbox.models import Upload
    from rosterdrop.inbox.store import receive

    for d, hours in ((district, 26), (other, 3)):
        upload = receive(d, "users.csv", school / "users.csv", "sftp", login="x")
        Upload.objects.filter(pk=upload.pk).update(
            status="imported", received_at=timezone.now() - timedelta(hours=hours)
        )
    make_user("ops@vendor.test", operator=True)
    ops = Console(browser, live_server.url)
    ops.sign_in("ops@vendor.test")
    ops.go("/", shot="44-dashboard-late")
    late = ops.page.locator(".badge.late")
    assert late.count() == 1
    assert late.inner_text() == "Late: no file for 26 h, expected nightly"
    ops.context.close()


def test_the_dashboard_chart_names_each_bar_by_its_district(
    browser, live_server, district, school, other
):
    from django.utils import timezone
    from helpers import edit
    from web_fixtures import held_sync

    from rosterdrop.districts.models import District
    from rosterdrop.ingest.syncs import import_path

    lincoln = District.objects.create(
        slug="lincoln",
        name="Lincoln Consolidated Independent School District",
        format="oneroster-1.1",
    )
    import_path(lincoln, school)
    import_path(district, school)
    edit(school / "users.csv", 4, "familyName", "Okonkwo")  # one record changed
    import_path(district, school)
    edit(school / "users.csv", 5, "role", "wizard")  # a row error
    import_path(district, school)
    edit(school / "users.csv", 5, "role", "student")
    held_sync(other, school)
    make_user("ops@vendor.test", operator=True)
    ops = Console(browser, live_server.url)
    ops.sign_in("ops@vendor.test")
    ops.go("/")
    ops.readme_shot("dashboard")

    chart = ops.page.locator("#sync-chart")
    box = chart.bounding_box()
    labels = chart.locator("text.bar-label")
    said = labels.all_text_contents()
    assert said == ["Lincoln Consolidated…"] + ["Springfield"] * 3 + ["Shelbyville"] * 2
    for label in labels.all():  # written on the page, inside the chart, not only a tooltip
        assert label.is_visible()
        near = label.bounding_box()
        assert box["y"] <= near["y"] and near["y"] + near["height"] <= box["y"] + box["height"]
    bars = [b.bounding_box()["height"] for b in chart.locator("rect.bar").all()]
    # Log scale: the one-record change shows, well above a sliver, below the first imports.
    assert 0.05 * max(bars) < bars[2] < 0.5 * max(bars)
    assert chart.locator("text.tick", has_text="100").count() == 1
    assert chart.locator("text.axis-title", has_text="records changed (log)").is_visible()
    today = f"{timezone.localtime():%b %-d}"
    assert today in chart.locator("text.date").all_text_contents()
    ops.context.close()


def test_times_are_shown_in_the_persons_own_time_zone(browser, live_server, district, school):
    """The person's choice first, then the district's zone, then the server's (UTC here)."""
    from datetime import UTC, datetime

    from rosterdrop.inbox.models import Upload
    from rosterdrop.inbox.store import receive

    district.time_zone = "America/Chicago"
    district.save()
    upload = receive(district, "users.csv", school / "users.csv", "sftp", login="x")
    noon = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    Upload.objects.filter(pk=upload.pk).update(received_at=noon, status="imported")
    make_user("ops@vendor.test", operator=True)
    make_user("data@springfield.test", district)

    ops = Console(browser, live_server.url)
    ops.sign_in("ops@vendor.test")
    ops.go("/")
    assert ops.page.inner_text("#time-zone") == "UTC time"
    assert "2026-07-01 12:00" in ops.page.inner_text("table.grid")
    ops.go("/d/springfield/uploads/")  # the district's pages: its own zone (CDT, UTC-5)
    assert ops.page.inner_text("#time-zone") == "America/Chicago time"
    assert "2026-07-01 07:00:00" in ops.page.inner_text("main")

    ops.go("/account/")
    ops.page.select_option("select[name=time_zone]", "Asia/Tokyo")
    ops.page.click("#time-zone-setting >> text=Save")
    ops.page.wait_for_selector("text=Times are now shown in Asia/Tokyo")
    for path, shown in (("/", "2026-07-01 21:00"), ("/d/springfield/uploads/", "21:00:00")):
        ops.go(path)
        assert ops.page.inner_text("#time-zone") == "Asia/Tokyo time"
        assert shown in ops.page.inner_text("main"), path
    ops.context.close()

    admin = Console(browser, live_server.url)  # no choice of their own: their district's zone
    admin.sign_in("data@springfield.test")
    admin.go("/audit/")
    assert admin.page.inner_text("#time-zone") == "America/Chicago time"
    admin.go("/account/")
    default = admin.page.locator("select[name=time_zone] option").first.inner_text()
    assert default == "Default: Springfield's (America/Chicago)"
    admin.context.close()


NEXT_GRADE = {"KG": "01", "01": "02", "02": "03", "03": "04", "04": "05", "05": "06"}


def next_school_year(folder) -> None:
    """The district's export after the summer: the 2026-2027 year and its term in place of
    2025-2026's, every class new (new IDs and codes, in the new term), every enrollment new,
    every student a grade up."""
    from helpers import rows, write

    def later(date: str) -> str:
        return date.replace("2026", "2027").replace("2025", "2026")

    sessions = rows(folder / "academicSessions.csv")
    new_id = {s[0]: f"{s[0][:8]}-2027" for s in sessions[1:]}
    for s in sessions[1:]:
        s[0], s[7] = new_id[s[0]], new_id.get(s[7], s[7])
        s[3] = s[3].replace("2025-2026", "2026-2027")
        s[5], s[6], s[8] = later(s[5]), later(s[6]), "2026-2027"
    write(folder / "academicSessions.csv", sessions)
    courses = rows(folder / "courses.csv")
    for c in courses[1:]:
        c[3] = new_id.get(c[3], c[3])
    write(folder / "courses.csv", courses)
    classes = rows(folder / "classes.csv")
    for c in classes[1:]:
        c[0], c[6], c[10] = f"{c[0]}-27", f"{c[6]}-27", new_id.get(c[10], c[10])
    write(folder / "classes.csv", classes)
    enrollments = rows(folder / "enrollments.csv")
    for e in enrollments[1:]:
        e[0], e[3], e[8], e[9] = f"{e[0]}-27", f"{e[3]}-27", later(e[8]), later(e[9])
    write(folder / "enrollments.csv", enrollments)
    users = rows(folder / "users.csv")
    for u in users[1:]:
        if u[5] == "student":
            u[16] = NEXT_GRADE[u[16]]
    write(folder / "users.csv", users)


def test_a_new_school_years_first_upload_is_held_as_a_term_rollover(
    browser, live_server, district, school
):
    from helpers import rows, write

    from rosterdrop.ingest.syncs import import_path
    from rosterdrop.roster.models import records

    assert import_path(district, school).status == "applied"  # a first upload is no rollover
    sessions = rows(school / "academicSessions.csv")  # a new term of the same year is none
    spring = [*sessions[2][:3], "Spring", "semester", "2026-01-05", "2026-06-10", *sessions[2][7:]]
    write(school / "academicSessions.csv", [*sessions, ["spring-2026", *spring[1:]]])
    same_year = import_path(district, school)
    assert (same_year.status, same_year.rollover) == ("applied", None)
    district.admins_decide_holds = True
    district.save()
    make_user("data@springfield.test", district)
    next_school_year(school)
    admin = Console(browser, live_server.url)
    admin.sign_in("data@springfield.test")
    admin.upload("springfield", school)
    admin.wait_for_status("held")
    rollover = admin.page.locator("#rollover")
    assert "the 2026-2027 school year starts" in rollover.locator("h2").inner_text()
    ending = admin.page.inner_text("#sessions-ending")
    starting = admin.page.inner_text("#sessions-starting")
    assert "2025-2026 School Year" in ending and "2026-06-10" in ending
    assert "2026-2027 School Year" in starting and "2027-06-10" in starting
    classes = admin.page.locator("#rollover-classes tbody tr, #rollover-classes tr").last
    assert classes.inner_text().split("\t") == [SCHOOL, "42", "42"]
    grades = [r.split("\t") for r in admin.page.inner_text("#rollover-grades").splitlines()[1:]]
    assert grades == [["KG", "1", "12"], ["1", "2", "12"], ["2", "3", "12"], ["3", "4", "12"],
                      ["4", "5", "12"], ["5", "6", "12"]]  # fmt: skip
    enrollments = admin.page.inner_text("#rollover-enrollments").splitlines()[1:]
    assert enrollments[0].split("\t") == [SCHOOL, "KG", "91", "91"] and len(enrollments) == 6
    admin.readme_shot("rollover")
    admin.go("/d/springfield/")
    assert admin.page.inner_text("#district-state") == "Held: term rollover to 2026-2027"
    sessions = records(district, "academicSessions").filter(status="active")
    assert {s.schoolYear for s in sessions} == {"2026"}  # nothing applied yet

    admin.page.goto(admin.page.url + f"syncs/{district.syncs.first().pk}/")
    admin.page.click("text=Approve and apply")
    admin.page.click("#confirm-decision")
    admin.wait_for_status("applied")
    assert {s.schoolYear for s in sessions.all()} == {"2027"}
    student = records(district, "users").get(givenName="Thandiwe", familyName="Tumbleweed")
    assert student.grades == "01"  # was KG
    kept = admin.page.inner_text("#rollover")  # what it ended and started, kept
    assert "was approved by data@springfield.test" in kept and "2026-2027 School Year" in kept
    admin.context.close()
