"""The console's daily flows in a real browser (Debian's Chromium driven by Playwright) on a
live server: a district admin decides their own held sync after a confirmation."""

import pytest
from test_browser import CHROMIUM, Console, browser  # noqa: F401  (fixture)
from test_holds import SCHOOL, held_without_young_students
from web_fixtures import make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


def test_district_admin_approves_their_own_hold_after_confirming(
    browser,  # noqa: F811
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


def test_check_only_shows_the_issues_and_applies_nothing(browser, live_server, district, school):  # noqa: F811
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
