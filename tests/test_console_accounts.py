"""Onboarding and accounts in the console without a browser: who may do what, logins'
passwords and permissions, invitations, password change ending other sessions, and the
forgotten password by mail (queued in the outbox, as every mail)."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from web_fixtures import PASSWORD, make_user, signed_in

from rosterdrop.audit.models import AuditEvent
from rosterdrop.districts.models import District
from rosterdrop.intake.models import Login
from rosterdrop.notify.models import OutboxMail

pytestmark = pytest.mark.django_db


def test_district_admins_cannot_onboard(district, other, admin):
    web = signed_in(admin)
    login = Login.objects.create(district=district, name="a_admin_springfield")
    for url in ("/people/", "/districts/new/", "/d/springfield/logins/"):
        assert web.get(url).status_code == 403, url
    for url in ("/people/invite/", f"/d/springfield/logins/{login.pk}/password/"):
        assert web.post(url, {"email": "x@y.test"}).status_code == 403, url
    assert web.get("/d/shelbyville/logins/").status_code == 404
    assert not get_user_model().objects.filter(username="x@y.test").exists()


def test_operator_creates_a_district_with_a_valid_time_zone(operator):
    web = signed_in(operator)
    form = {"slug": "newtown", "name": "Newtown", "format": "clever",
            "quiet_period_seconds": 300, "fallback_encoding": "cp1252"}  # fmt: skip
    refused = web.post("/districts/new/", {**form, "time_zone": "Mars/Olympus"})
    assert "not a time zone name" in refused.text
    assert not District.objects.filter(slug="newtown").exists()
    web.post("/districts/new/", {**form, "time_zone": "America/Chicago"})
    assert District.objects.get(slug="newtown").time_zone == "America/Chicago"
    assert AuditEvent.objects.filter(detail__contains="created district newtown").exists()


def test_login_password_is_shown_once_and_replaces_the_old_one(district, operator):
    web = signed_in(operator)
    page = web.post("/d/springfield/logins/add/", {"person": "Ana María", "state": "IL"}).text
    first = re.search(r'id="new-password">([^<]+)<', page).group(1)
    login = Login.objects.get(name="anamaria_admin_springfield_il")
    assert login.check_password(first) and login.permissions == ["list", "download", "delete"]
    again = web.post("/d/springfield/logins/add/", {"person": "Ana Maria", "state": "IL"})
    assert "exists already" in again.text
    page = web.post(f"/d/springfield/logins/{login.pk}/password/").text
    second = re.search(r'id="new-password">([^<]+)<', page).group(1)
    login.refresh_from_db()
    assert login.check_password(second) and not login.check_password(first)
    assert first not in web.get("/d/springfield/logins/").text
    web.post(f"/d/springfield/logins/{login.pk}/permissions/", {"permissions": ["list"]})
    web.post(f"/d/springfield/logins/{login.pk}/active/", {"active": "0"})
    web.post(f"/d/springfield/logins/{login.pk}/allow-list/", {"allowed_ips": "not-an-ip"})
    login.refresh_from_db()
    assert (login.permissions, login.active, login.allowed_ips) == (["list"], False, "")
    web.post(f"/d/springfield/logins/{login.pk}/remove/")
    assert not Login.objects.filter(pk=login.pk).exists()
    assert AuditEvent.objects.filter(detail__startswith="removed SFTP login").count() == 1


def test_a_refused_login_change_says_why_and_audits_nothing(district, operator):
    """Every change to a login goes back to the logins page with what happened: a key that is
    no key, an address that is none or a permission there is not changes nothing."""
    web = signed_in(operator)
    login = Login.objects.create(district=district, name="a_admin_springfield")
    base = f"/d/springfield/logins/{login.pk}"
    refused = {
        "key/": ({"public_key": "ssh-ed25519 not-a-key"}, "Key not added:"),
        "allow-list/": ({"allowed_ips": "not-an-ip"}, "Allow list not saved:"),
        "permissions/": ({"permissions": ["format-disk"]}, "Permissions not saved:"),
    }
    for action, (form, said) in refused.items():
        page = web.post(base + "/" + action, form, follow=True)
        assert page.redirect_chain == [("/d/springfield/logins/", 302)]
        assert said in page.text, action
    assert not AuditEvent.objects.filter(kind="admin").exists()
    login.refresh_from_db()
    assert (login.public_keys, login.allowed_ips) == ("", "")
    page = web.post(base + "/active/", {"active": "0"}, follow=True)
    assert "a_admin_springfield is disabled." in page.text
    [event] = AuditEvent.objects.filter(kind="admin")
    assert event.detail == "disabled SFTP login a_admin_springfield"


def test_an_invited_operator_sets_a_password_from_the_link(operator):
    signed_in(operator).post("/people/invite/", {"email": "new@vendor.test", "district": ""})
    user = get_user_model().objects.get(username="new@vendor.test")
    assert user.is_staff and not user.has_usable_password()
    [mail] = OutboxMail.objects.filter(to="new@vendor.test")
    path = re.search(r"https?://[^/\s]+(/accounts/reset/\S+/)", mail.body).group(1)
    web = Client()
    form = web.get(path, follow=True)  # Django swaps the token for a session-held one
    new = {"new_password1": "a brand new password 1", "new_password2": "a brand new password 1"}
    assert web.post(form.redirect_chain[-1][0], new, follow=True).status_code == 200
    user.refresh_from_db()
    assert user.check_password("a brand new password 1")


def test_changing_a_password_ends_the_other_sessions(admin):
    here, elsewhere = Client(), Client()
    for client in (here, elsewhere):
        signin = {"username": "data@springfield.test", "password": PASSWORD}
        assert client.post("/accounts/login/", signin).status_code == 302
    assert elsewhere.get("/d/springfield/").status_code == 200
    changed = here.post("/accounts/password/", {"old_password": PASSWORD,
                        "new_password1": "another long password 2",
                        "new_password2": "another long password 2"})  # fmt: skip
    assert changed.status_code == 302
    assert here.get("/d/springfield/").status_code == 200
    assert elsewhere.get("/d/springfield/").url.startswith("/accounts/login/")


def test_a_forgotten_password_is_reset_by_mail(admin):
    make_user("nobody-else@springfield.test")
    Client().post("/accounts/reset/", {"email": "data@springfield.test"})
    Client().post("/accounts/reset/", {"email": "unknown@springfield.test"})
    [mail] = OutboxMail.objects.all()
    assert mail.to == "data@springfield.test" and "/accounts/reset/" in mail.body


def api_status(token: str) -> int:
    return Client().get("/api/districts", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def test_api_tokens_are_named_expire_and_are_revoked_in_console_and_cli(admin):
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    from rosterdrop.accounts.models import ApiToken

    web = signed_in(admin)
    page = web.post("/account/tokens/", {"name": "nightly export", "days": 30}).text
    token = re.search(r'id="new-token">([^<]+)<', page).group(1)
    assert api_status(token) == 200
    made = ApiToken.objects.get(name="nightly export")
    assert token not in web.get("/account/").text and made.hint in web.get("/account/").text
    assert 29 <= (made.expires_at - timezone.now()).days <= 30
    ApiToken.objects.filter(pk=made.pk).update(expires_at=timezone.now())
    assert api_status(token) == 401
    assert "expired" in web.get("/account/").text

    out = StringIO()
    call_command("token", "create", admin.username, "--name", "sis", stdout=out)
    cli_token = out.getvalue().strip()
    out = StringIO()
    call_command("token", "list", admin.username, "--json", stdout=out)
    listed = {t["name"]: t for t in __import__("json").loads(out.getvalue())}
    assert listed["sis"]["expires"] == "" and listed["nightly export"]["expired"]
    assert api_status(cli_token) == 200
    call_command("token", "revoke", str(listed["sis"]["id"]), stdout=StringIO())
    assert api_status(cli_token) == 401
    web.post(f"/account/tokens/{made.pk}/revoke/")
    assert not ApiToken.objects.exists()
    other = make_user("x@springfield.test")
    mine = ApiToken.issue(other)
    assert web.post(f"/account/tokens/{ApiToken.objects.get().pk}/revoke/").status_code == 404
    assert api_status(mine) == 200
