"""Operators hand out a district's SFTP/FTPS logins: add, password, keys, permissions, remove.

A password is generated here and shown once, on the page that made it; only its hash is kept.
"""

import secrets

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from rosterdrop.accounts.decorators import audit_admin, operator_district_view
from rosterdrop.intake.models import PERMISSIONS, Login, login_name
from rosterdrop.web.connection import connection_for
from rosterdrop.web.forms import LoginAddForm, LoginPermissionsForm


def new_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, about 120 bits


def _page(request, district, shown: tuple[Login, str] | None = None, add_form=None):
    return render(
        request,
        "web/logins.html",
        {
            "district": district,
            "logins": district.sftp_logins.all(),
            "connection": connection_for(district, request),
            "add_form": add_form or LoginAddForm(),
            "shown": shown,
            "permission_choices": PERMISSIONS.items(),
        },
    )


def _login(district, pk: int) -> Login:
    return get_object_or_404(Login, pk=pk, district=district)


@operator_district_view
def logins(request, district):
    return _page(request, district)


@require_POST
@operator_district_view
def add(request, district):
    """A login named by the configured scheme, with a generated password shown once."""
    form = LoginAddForm(request.POST)
    if not form.is_valid():
        return _page(request, district, add_form=form)
    name = login_name(form.cleaned_data["person"], district, form.cleaned_data["state"])
    if not name or Login.objects.filter(name=name).exists():
        form.add_error(None, f"The login {name or '(empty)'} exists already; give another name.")
        return _page(request, district, add_form=form)
    login = Login(district=district, name=name)
    password = new_password()
    login.set_password(password)
    login.save()
    audit_admin(request, f"added SFTP login {name} to {district.slug}")
    return _page(request, district, shown=(login, password))


@require_POST
@operator_district_view
def password(request, district, pk: int):
    login = _login(district, pk)
    password = new_password()
    login.set_password(password)
    login.save(update_fields=["password_hash"])
    audit_admin(request, f"reset the password of SFTP login {login.name}")
    return _page(request, district, shown=(login, password))


@require_POST
@operator_district_view
def active(request, district, pk: int):
    login = _login(district, pk)
    login.active = request.POST.get("active") == "1"
    login.save(update_fields=["active"])
    state = "enabled" if login.active else "disabled"
    audit_admin(request, f"{state} SFTP login {login.name}")
    messages.success(request, f"{login.name} is {state}.")
    return redirect("web:logins", district.slug)


@require_POST
@operator_district_view
def remove(request, district, pk: int):
    login = _login(district, pk)
    login.delete()
    audit_admin(request, f"removed SFTP login {login.name} of {district.slug}")
    messages.success(request, f"{login.name} is removed.")
    return redirect("web:logins", district.slug)


@require_POST
@operator_district_view
def add_key(request, district, pk: int):
    login = _login(district, pk)
    try:
        fingerprint = login.add_public_key(request.POST.get("public_key", ""))
    except ValueError as exc:  # asyncssh.KeyImportError is a ValueError
        messages.error(request, f"Key not added: {exc}.")
    else:
        login.save(update_fields=["public_keys"])
        audit_admin(request, f"added SSH key {fingerprint} to SFTP login {login.name}")
        messages.success(request, f"Key {fingerprint} added to {login.name}.")
    return redirect("web:logins", district.slug)


@require_POST
@operator_district_view
def allow_list(request, district, pk: int):
    login = _login(district, pk)
    login.allowed_ips = request.POST.get("allowed_ips", "").strip()
    try:
        login.clean()
    except ValidationError as exc:
        messages.error(request, f"Allow list not saved: {' '.join(exc.messages)}")
    else:
        login.save(update_fields=["allowed_ips"])
        audit_admin(request, f"changed the IP allow list of SFTP login {login.name}")
        messages.success(request, "IP allow list saved.")
    return redirect("web:logins", district.slug)


@require_POST
@operator_district_view
def permissions(request, district, pk: int):
    login = _login(district, pk)
    form = LoginPermissionsForm(request.POST)
    if form.is_valid():
        login.permissions = form.cleaned_data["permissions"]
        login.save(update_fields=["permissions"])
        granted = ", ".join(["upload", *login.permissions])
        audit_admin(request, f"permissions of SFTP login {login.name}: {granted}")
        messages.success(request, f"{login.name} may now: {granted}.")
    return redirect("web:logins", district.slug)
