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
