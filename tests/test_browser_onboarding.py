"""Onboarding in a real browser against a real `rosterdrop serve`: an operator creates a
district, adds its SFTP login (password shown once), pastes an SSH key and limits it to upload
only, invites the district's admin; the invitation arrives in an SMTP sink (aiosmtpd) through
serve's mail thread, the admin chooses a password from its link and uploads a file. The SIS
then uploads over SFTP with the key. Everything is in the audit log."""

import re
import shutil

import pytest
from browser_fixtures import CHROMIUM, Console
from test_notify import Sink, free_port
from web_fixtures import PASSWORD

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/test)"),
]


@pytest.fixture
def sink():
    from aiosmtpd.controller import Controller

    mails = Sink()
    controller = Controller(mails, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mails, controller.port
    controller.stop()


def test_operator_onboards_a_district_end_to_end(browser, make_server, sink, school, tmp_path):
    mails, smtp_port = sink
    server = make_server(
        ROSTERDROP_SMTP_HOST="127.0.0.1",
        ROSTERDROP_SMTP_PORT=str(smtp_port),
        ROSTERDROP_SMTP_TLS="none",
    )
    server.cli(
        "user", "add", "ops@vendor.test", "--operator", "--password-stdin", input=PASSWORD + "\n"
    )
    ops = Console(browser, f"http://127.0.0.1:{server.web_port}")
    ops.sign_in("ops@vendor.test")

    # 1. The district.
    ops.go("/")
    ops.page.click("text=New district")
    ops.page.fill("input[name=slug]", "newtown")
    ops.page.fill("input[name=name]", "Newtown Unified")
    ops.page.select_option("select[name=format]", "oneroster-1.1")
    ops.page.fill("input[name=time_zone]", "America/Chicago")
    ops.shot("30-new-district")
    ops.page.click("text=Create district")
    ops.page.wait_for_url("**/d/newtown/logins/")

    # 2. Its login, named by the scheme; the password is shown once.
    ops.page.fill("input[name=person]", "Ana Ruiz")
    ops.page.fill("input[name=state]", "TX")
    ops.page.click("text=Add login")
    password = ops.page.inner_text("#new-password").strip()
    assert len(password) >= 20
    login = "anaruiz_admin_newtown_tx"
    card = ops.page.locator(f"section.login[data-login={login}]")
    assert card.count() == 1
    ops.shot("31-login-password-shown-once")
    ops.go("/d/newtown/logins/")
    assert password not in ops.page.content()

    # 3. The SIS's key, and upload-only permissions.
    card.locator("textarea[name=public_key]").fill(server.key.with_suffix(".pub").read_text())
    card.locator("text=Add key").click()
    assert "SHA256:" in card.locator("code.key").inner_text()
    for box in card.locator("input[name=permissions]").all():
        box.uncheck()
    card.locator("text=Save permissions").click()
    ops.page.wait_for_selector("text=may now: upload.")
    ops.shot("32-login-key-and-permissions")

    # 4. The district's admin, invited by mail.
    ops.go("/people/")
    ops.page.fill("input[name=email]", "Data@Newtown.test")
    ops.page.select_option("select[name=district]", label="Newtown Unified")
    ops.page.click("text=Send invitation")
    ops.page.wait_for_selector("text=Invitation mailed to data@newtown.test")
    ops.shot("33-people-invited")
    server.wait_for(lambda: mails.to("data@newtown.test"), what="the invitation mail")
    [mail] = mails.to("data@newtown.test")
    body = mail.get_content()
    assert "district admin of Newtown Unified" in body
    path = re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", body).group(1)

    admin = Console(browser, ops.base)
    admin.go(path)
    admin.page.fill("input[name=new_password1]", "correct horse battery staple 9")
    admin.page.fill("input[name=new_password2]", "correct horse battery staple 9")
    admin.shot("34-invited-sets-password")
    admin.page.click("text=Set password")
    admin.page.wait_for_url("**/d/newtown/")
    admin.upload("newtown", school)
    admin.wait_for_status("applied")
    admin.go(path)  # the link works once
    assert admin.page.locator("text=has been used or has expired").count() == 1

    # 5. The SIS connects with its key and uploads.
    server.openssh(f'put "{school / "orgs.csv"}"\n', login)
    names = [u["filename"] for u in server.uploads() if u["login"] == login]
    assert names == ["orgs.csv"]

    # Everything above is in the audit log.
    details = " | ".join(r["detail"] for r in server.audit("admin"))
    for said in (
        "created district newtown",
        f"added SFTP login {login} to newtown",
        "added SSH key SHA256:",
        f"permissions of SFTP login {login}: upload",
        "invited data@newtown.test as district admin of Newtown Unified",
        "set their password from a mailed link",
    ):
        assert said in details, said
    shutil.rmtree(tmp_path, ignore_errors=True)
