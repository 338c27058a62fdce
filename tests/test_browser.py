"""The console in a real browser (Debian's headless Chromium driven by Playwright) against a
live server: sign in as a district admin and as an operator, upload through the web form,
watch the sync finish, read its diff, download its error log, approve a held sync, and find
another district closed. Screenshots of the main pages go to test-artifacts/."""

import csv
import io
import shutil
from pathlib import Path

import pytest
from helpers import edit, rows, write
from web_fixtures import PASSWORD, make_user

from rosterdrop.districts.models import District

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # are plain synchronous code all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


class Console:
    """One signed-in browser tab."""

    def __init__(self, browser, base: str):
        self.context = browser.new_context(
            accept_downloads=True, viewport={"width": 1280, "height": 900}
        )
        self.page = self.context.new_page()
        self.base = base

    def sign_in(self, email: str, shot: str = "") -> None:
        self.page.goto(f"{self.base}/accounts/login/")
        self.page.fill("input[name=username]", email)
        self.page.fill("input[name=password]", PASSWORD)
        if shot:
            self.shot(shot)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()

    def go(self, path: str, shot: str = "") -> None:
        self.page.goto(self.base + path)
        if shot:
            self.shot(shot)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def upload(self, slug: str, folder: Path) -> None:
        self.go(f"/d/{slug}/")
        self.page.set_input_files("input[name=files]", sorted(str(p) for p in folder.iterdir()))
        self.page.click("text=Upload and import")
        self.page.wait_for_url("**/syncs/*/")

    def wait_for_status(self, status: str) -> None:
        """The sync page polls with htmx while the import runs, then reloads once."""
        try:
            self.page.wait_for_selector(f"#sync-status[data-status={status}]", timeout=60_000)
        except Exception:
            self.shot("failed-wait")
            raise AssertionError(self.page.inner_text("main")[:2000]) from None


def test_district_admin_and_operator_walk_through_the_console(
    browser, live_server, district, school, tmp_path
):
    other = District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")
    make_user("data@springfield.test", district)
    make_user("ops@vendor.test", operator=True)
    make_user("data@shelbyville.test", other)
    edit(school / "users.csv", 5, "role", "=wizard")  # an error row, formula-looking

    admin = Console(browser, live_server.url)
    admin.sign_in("data@springfield.test", shot="01-sign-in")
    assert admin.page.url.endswith("/d/springfield/")
    admin.shot("02-district-overview")

    # Upload through the form; the sync appears and finishes while the page polls.
    admin.upload("springfield", school)
    admin.wait_for_status("applied_with_errors")
    admin.shot("03-sync-applied-with-errors")

    # Download the error log: an attachment with formula-safe cells.
    with admin.page.expect_download() as info:
        admin.page.click("#download-issues")
    download = info.value
    table = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert download.suggested_filename.endswith("-issues.csv")
    assert any(r["value"] == "'=wizard" and r["line"] == "5" for r in table)

    # A changed family name shows before and after.
    family = rows(school / "users.csv")[3][9]
    edit(school / "users.csv", 4, "familyName", "Okonkwo")
    admin.upload("springfield", school)
    admin.wait_for_status("applied_with_errors")
    assert admin.page.locator("td.before", has_text=family).count() == 1
    assert admin.page.locator("td.after", has_text="Okonkwo").count() == 1
    admin.shot("04-sync-diff")

    for name, path in (
        ("05-uploads", "uploads/"),
        ("06-syncs", "syncs/"),
        ("07-sis-data", "sis/"),
        ("08-roster", "roster/?q=Okonkwo"),
        ("09-data-assistant", "assistant/"),
    ):
        admin.go(f"/d/springfield/{path}", shot=name)
    assert admin.page.locator("text=Students without classes").count() == 1

    # Another district is closed to this admin, in pages and in the API.
    admin.go("/d/shelbyville/")
    assert admin.page.locator("h1", has_text="Not found").count() == 1
    assert admin.page.request.get(f"{live_server.url}/api/districts/shelbyville").status == 401
    admin.context.close()

    # The operator sees every district, then approves a sync held by the removal guard.
    ops = Console(browser, live_server.url)
    ops.sign_in("ops@vendor.test")
    ops.shot("10-operator-dashboard")
    assert ops.page.locator("text=Shelbyville").count() >= 1
    enrollments = rows(school / "enrollments.csv")
    write(school / "enrollments.csv", enrollments[: len(enrollments) // 2])
    ops.upload("springfield", school)
    ops.wait_for_status("held")
    ops.shot("11-held-sync")
    ops.page.click("text=Approve and apply")
    ops.wait_for_status("applied_with_errors")
    assert ops.page.locator("text=decided by ops@vendor.test").count() == 1
    ops.go("/audit/", shot="12-audit-log")
    assert ops.page.locator("td", has_text="approve held sync").count() == 1
    ops.context.close()
    shutil.rmtree(tmp_path, ignore_errors=True)
