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
from browser_fixtures import CHROMIUM, Console
from helpers import edit, rows, write
from web_fixtures import make_user

from rosterdrop.districts.models import District

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


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


def test_wizard_template_reads_the_next_sftp_upload(custom_district, make_server, tmp_path):
    alpha = custom_district(make_server())
    server, web, export = alpha.server, alpha.web, alpha.export
    sample = tmp_path / "Student Export.csv"
    sample.write_text(STUDENTS.format(date="31/12/2016"), encoding="utf-8")

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
