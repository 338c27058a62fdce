"""The console in a real browser (Debian's headless Chromium driven by Playwright) against a
live server: sign in as a district admin and as an operator, upload through the web form,
watch the sync finish, read its diff, download its error log, approve a held sync, and find
another district closed; build an import template with the wizard on a real `rosterdrop serve`
and see its next SFTP upload read with it. Screenshots of the main pages go to test-artifacts/."""

import csv
import io
import shutil
from pathlib import Path

import pytest
from helpers import edit, rows, write
from web_fixtures import PASSWORD, make_user

from rosterdrop.districts.models import District

# The SFTP tests' real server and OpenSSH client.

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# The README's pictures of the console, made again by every run (commit them when they change).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
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

    def readme_shot(self, name: str, down_to: str = "") -> None:
        """The page as the README shows it: its first screen, or from the top down to the end
        of the element `down_to` (at most 2,000 pixels)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = self.page.viewport_size["height"]
        if down_to:
            box = self.page.locator(down_to).bounding_box()  # the page is at its top
            height = min(int(box["y"] + box["height"]) + 16, 2000)
        clip = {"x": 0, "y": 0, "width": self.page.viewport_size["width"], "height": height}
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True, clip=clip)

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
    admin.readme_shot("sync", down_to="#changes")

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
    ops.page.click("#confirm-decision")  # after the confirmation page
    ops.wait_for_status("applied_with_errors")
    assert ops.page.locator("text=decided by ops@vendor.test").count() == 1
    ops.go("/audit/", shot="12-audit-log")
    assert ops.page.locator("td", has_text="approve held sync").count() == 1
    ops.context.close()
    shutil.rmtree(tmp_path, ignore_errors=True)


# "Apellido" suggests no field: it is mapped by hand. The sample's day-first date is refused.
STUDENTS = (
    "Campus ID;Student ID;First Name;Apellido;Birth Date;Homeroom\n"
    "001;000123;Zoë;O'Brien;04/02/2017;12B\n"
    "001;000124;José;Muñoz;{date};12B\n"
)
SCHOOLS = "Campus ID;School Name\n001;Escuela José Martí\n"


def test_wizard_template_reads_the_next_sftp_upload(browser, make_server, tmp_path):
    server = make_server()
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.districts.models import District;"
        "District.objects.filter(slug='alpha').update(format='custom')",
    )
    server.cli("user", "add", "data@alpha.test", "--district", "alpha", "--password-stdin",
               input=PASSWORD + "\n")  # fmt: skip
    export = tmp_path / "export"
    export.mkdir()
    (export / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
    server.cli("template", "add", str(export / "Campuses.csv"), "--district", "alpha",
               "--kind", "schools", "--delimiter", ";")  # fmt: skip
    sample = tmp_path / "Student Export.csv"
    sample.write_text(STUDENTS.format(date="31/12/2016"), encoding="utf-8")

    web = Console(browser, f"http://127.0.0.1:{server.web_port}")
    web.sign_in("data@alpha.test")
    # The overview gives the port serve really listens on.
    assert web.page.locator("code.copy", has_text=str(server.port)).count() == 1
    web.go("/d/alpha/templates/", shot="13-wizard-templates")
    web.page.click("text=New template")
    web.page.check("input[value=students]")
    web.shot("14-wizard-kind")
    web.page.click("text=Next: sample file")
    web.page.set_input_files("input[name=sample]", str(sample))
    web.shot("15-wizard-sample")
    web.page.click("text=Next: map the columns")
    assert "Last name" in web.page.inner_text("#mapping-problems")
    # Choosing a field updates the check below the table in place (htmx), with no reload.
    web.page.select_option('select[aria-label="Field for Apellido"]', "last_name")
    web.page.wait_for_selector("#mapping-ok")
    web.page.select_option("select[name=date_format]", "%m/%d/%Y")
    web.shot("16-wizard-columns")
    web.page.click("text=Check against the sample")
    web.page.wait_for_url("**/templates/new/check/")
    issue = web.page.locator("#issue-table tr", has_text="date_invalid")
    assert "31/12/2016" in issue.inner_text() and "Birth Date" in issue.inner_text()
    web.shot("17-wizard-check")
    assert web.page.input_value("input[name=file_name]") == "Student Export.csv"
    web.page.click("text=Save template")
    web.page.wait_for_url("**/d/alpha/templates/")
    assert web.page.locator("#templates code", has_text="Student Export.csv").count() == 1
    web.shot("18-wizard-saved")

    # The district's SIS sends the corrected export, a case variant and a file of no template.
    (export / "Student Export.csv").write_text(STUDENTS.format(date="12/31/2016"), "utf-8")
    (export / "student export.csv").write_text(STUDENTS.format(date="12/31/2016"), "utf-8")
    (export / "grades.csv").write_text("Student ID;Grade\n000123;A\n", encoding="utf-8")
    names = ("Campuses.csv", "Student Export.csv", "student export.csv", "grades.csv")
    server.openssh("".join(f'put "{export / name}"\n' for name in names))
    server.wait_idle()

    uploads = {u["filename"]: u for u in server.uploads()}
    assert uploads["grades.csv"]["status"] == "unmatched"
    assert "import templates of alpha" in uploads["grades.csv"]["outcome"]
    assert "Did you mean Student Export.csv?" in uploads["student export.csv"]["outcome"]
    [sync] = server.syncs()
    assert sync["status"] == "applied", sync["message"]
    [zoe] = server.query("select * from roster_user where sourced_id = ?", "000123")
    assert (zoe["givenName"], zoe["familyName"]) == ("Zoë", "O'Brien")  # Apellido, by hand
    assert zoe["metadata"] is None  # Homeroom was ignored
    [born] = server.query("select * from roster_demographics where sourced_id = ?", "000124")
    assert born["birthDate"] == "2016-12-31"  # read month first, as the template says
    web.go("/d/alpha/uploads/", shot="19-unmatched-uploads")
    assert web.page.locator(".badge.unmatched").count() == 2
    web.go(f"/d/alpha/syncs/{sync['id']}/", shot="20-template-sync")
    web.context.close()
