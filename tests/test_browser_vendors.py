"""Each seed's flow in a real browser (Debian's Chromium driven by Playwright) against a live
server or a real `rosterdrop serve`, with mail in a real SMTP sink (aiosmtpd): ALO's,
ParentSquare's and Istation's data managers."""

import io
import shutil
import zipfile
from pathlib import Path

import pytest
import sftp_fixtures
import test_notify
from browser_fixtures import CHROMIUM, Console
from test_vendors_alo import FILES, STAFF, STUDENTS, alo_zip
from test_vendors_parentsquare import FILES as NIGHTLY
from web_fixtures import make_user

from rosterdrop import notify
from rosterdrop.districts.models import District
from rosterdrop.notify.models import Subscription

# The fixtures of the console's and the mail's own tests.
smtp, smtp_port = test_notify.smtp, test_notify.smtp_port

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


def upload_zip(web: Console, slug: str, path: Path) -> None:
    web.go(f"/d/{slug}/")
    web.page.set_input_files("input[name=files]", str(path))
    web.page.click("text=Upload and import")
    web.page.wait_for_url("**/syncs/*/")


def test_alo_templates_three_fatal_defects_at_once_then_row_errors_logs_and_mail(
    browser, live_server, smtp, tmp_path, settings
):
    settings.BASE_URL = live_server.url
    district = District.objects.create(slug="oakridge", name="Oak Ridge SD", format="alo")
    make_user("data@oakridge.test", district)
    Subscription.objects.create(district=district, email="data@oakridge.test", on_success=True)
    web = Console(browser, live_server.url)
    web.sign_in("data@oakridge.test")

    # The 7 templates, the manifest filled in for this account, in one zip.
    web.go("/d/oakridge/", shot="alo-01-overview")
    with web.page.expect_download() as info:
        web.page.click("text=all in one .zip")
    with zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes())) as z:
        assert set(FILES) <= set(z.namelist())
        assert z.read("Manifest.csv").decode().splitlines()[1].startswith("oakridge,")

    # A zip with three fatal defects: every one listed on the sync's page at once.
    broken = tmp_path / "broken"
    broken.mkdir()
    three = alo_zip(
        broken,
        Staff_csv=None,
        Classes_csv="ID,Grade\n1,3\n",
        Manifest_csv=FILES["Manifest.csv"].replace("oakridge,", "elmwood,"),
    )
    upload_zip(web, "oakridge", three)
    web.wait_for_status("failed")
    web.shot("alo-02-three-fatal-defects")
    table = web.page.inner_text("main")
    for said in ("Staff.csv is missing", "District ID = 'elmwood'", "'Name'", "'School ID'"):
        assert said in table, said

    # Row errors (an email that is not one, a grade that is not one): applied with errors.
    rows = tmp_path / "rows"
    rows.mkdir()
    upload_zip(
        web,
        "oakridge",
        alo_zip(
            rows,
            Staff_csv=STAFF.replace("eve@oakridge.example.org", "eve(at)oakridge"),
            Students_csv=STUDENTS.replace("3,Cy,Ray,7,", "3,Cy,Ray,Seventh,"),
        ),
    )
    web.wait_for_status("applied_with_errors")
    web.shot("alo-03-applied-with-errors")
    issues = web.page.inner_text("#issues")
    assert "email_invalid" in issues and "enum_invalid" in issues

    # And the mail says so, with the counts, the first issues and the link to the full log.
    notify.send_pending()
    mails = smtp.to("data@oakridge.test")
    failed = next(m for m in mails if "failed" in m["Subject"]).get_content()
    assert "Staff.csv is missing" in failed and "Issues: 3 fatal" in failed
    applied = next(m for m in mails if "with errors" in m["Subject"]).get_content()
    assert "Staff.csv:4:" in applied and "Issues: 0 fatal, " in applied
    link = next(line for line in applied.splitlines() if line.startswith("Full log: "))
    web.page.goto(link.removeprefix("Full log: "))
    assert web.page.locator("#sync-status[data-status=applied_with_errors]").count() == 1
    web.context.close()


def test_parentsquare_uploads_syncs_sis_data_assistant_and_why(browser, live_server, tmp_path):
    district = District.objects.create(slug="elm", name="Elm USD", format="parentsquare")
    make_user("data@elm.test", district)
    nightly = tmp_path / "nightly"
    nightly.mkdir()
    for name, text in NIGHTLY.items():
        (nightly / name).write_text(text, encoding="utf-8")
    web = Console(browser, live_server.url)
    web.sign_in("data@elm.test")
    web.upload("elm", nightly)
    web.wait_for_status("applied_with_errors")

    web.go("/d/elm/uploads/", shot="psq-01-upload-history")
    assert web.page.locator(".badge.imported").count() == len(NIGHTLY)
    web.go("/d/elm/syncs/", shot="psq-02-sync-history")
    staff_upload = district.uploads.get(filename="staff.csv")
    web.go(f"/d/elm/sis/?upload={staff_upload.pk}&file=staff.csv", shot="psq-03-sis-data")
    assert "T30" in web.page.inner_text("main")
    web.go("/d/elm/assistant/", shot="psq-04-assistant")
    web.readme_shot("assistant")
    staff = web.page.inner_text("main")
    assert "Tess Nobody" in staff and "All staff rows were imported" not in staff
    assert "Paul Gone" in staff and "All parent rows were imported" not in staff
    web.page.fill("input[name=id]", "S3")
    web.page.click("text=Trace")
    web.page.wait_for_url("**/assistant/why/?id=S3")
    web.shot("psq-05-why-s3")
    why = web.page.inner_text("main")
    assert "S3 is in the roster" in why
    assert why.index("sections.csv line 3") < why.index("staff.csv line 3")
    web.context.close()


def test_istation_wizard_then_sftp_and_ftps_with_the_dotted_login_then_mails(
    custom_district, make_server, smtp, smtp_port, tmp_path
):
    from ftps_fixtures import curl
    from test_browser import STUDENTS

    alpha = custom_district(sftp_fixtures.mailing_server(make_server, smtp_port, "data@alpha.test"))
    server, web, export = alpha.server, alpha.web, alpha.export
    sample = tmp_path / "Student Export.csv"
    sample.write_text(STUDENTS.format(date="12/31/2016"), encoding="utf-8")

    # The wizard, from a sample whose columns have the district's own names.
    web.go("/d/alpha/templates/")
    web.page.click("text=New template")
    web.page.check("input[value=students]")
    web.page.click("text=Next: sample file")
    web.page.set_input_files("input[name=sample]", str(sample))
    web.page.click("text=Next: map the columns")
    web.page.select_option('select[aria-label="Field for Apellido"]', "last_name")
    web.page.wait_for_selector("#mapping-ok")
    web.page.select_option("select[name=date_format]", "%m/%d/%Y")
    web.page.click("text=Check against the sample")
    web.page.wait_for_url("**/templates/new/check/")
    web.page.click("text=Save template")
    web.page.wait_for_url("**/d/alpha/templates/")
    web.shot("ist-01-template-saved")

    # The exact file name over SFTP, then over FTPS with the dotted login; then a wrong case.
    shutil.copy(sample, export / "Student Export.csv")
    server.openssh(f'put "{export / "Campuses.csv"}"\nput "{export / "Student Export.csv"}"\n')
    server.wait_idle()
    first = test_notify.wait_for(lambda: smtp.to("data@alpha.test"), 30)[0].get_content()
    assert "users: 2 added" in first and "Student Export.csv: 2 rows" in first
    changed = export / "changed.csv"
    changed.write_text(STUDENTS.format(date="12/31/2016").replace("Muñoz", "Munoz"), "utf-8")
    assert curl(server, changed, implicit=False, name="Student%20Export.csv").returncode == 0
    server.wait_idle()
    assert curl(server, changed, implicit=True, name="student%20export.csv").returncode == 0
    server.wait_idle()
    mails = test_notify.wait_for(
        lambda: len(smtp.to("data@alpha.test")) >= 3 and smtp.to("data@alpha.test"), 30
    )
    updated = [m.get_content() for m in mails if "roster updated" in m["Subject"]]
    assert any("users: 0 added, 1 updated" in body for body in updated)
    [wrong] = [m for m in mails if "was not imported" in m["Subject"]]
    assert "Did you mean Student Export.csv?" in wrong.get_content()
    web.go("/d/alpha/uploads/", shot="ist-02-uploads")
    assert web.page.locator(".badge.unmatched").count() == 1
    web.context.close()
