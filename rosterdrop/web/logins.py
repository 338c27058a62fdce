"""Operators hand out a district's SFTP/FTPS logins: add, password, keys, permissions, remove.

A password is generated here and shown once, on the page that made it; only its hash is kept.
"""

import secrets
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest
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
    login = get_object_or_404(Login, pk=pk, district=district)
    password = new_password()
    login.set_password(password)
    login.save(update_fields=["password_hash"])
    audit_admin(request, f"reset the password of SFTP login {login.name}")
    return _page(request, district, shown=(login, password))


class Refused(Exception):
    """A change not made: the operator is told why; nothing is saved or audited."""


def login_change(change: Callable[[HttpRequest, Login], tuple[str, str]]):
    """A POST that changes one of the district's logins, then back to its logins page.
    `change` saves the login and returns what the audit log and the page say."""

    @require_POST
    @operator_district_view
    @wraps(change)
    def view(request, district, pk: int):
        login = get_object_or_404(Login, pk=pk, district=district)
        try:
            audited, said = change(request, login)
        except Refused as refused:
            messages.error(request, str(refused))
        else:
            audit_admin(request, audited)
            messages.success(request, said)
        return redirect("web:logins", district.slug)

    return view


@login_change
def active(request, login: Login) -> tuple[str, str]:
    login.active = request.POST.get("active") == "1"
    login.save(update_fields=["active"])
    state = "enabled" if login.active else "disabled"
    return f"{state} SFTP login {login.name}", f"{login.name} is {state}."


@login_change
def remove(request, login: Login) -> tuple[str, str]:
    audited = f"removed SFTP login {login.name} of {login.district.slug}"
    login.delete()
    return audited, f"{login.name} is removed."


@login_change
def add_key(request, login: Login) -> tuple[str, str]:
    try:
        fingerprint = login.add_public_key(request.POST.get("public_key", ""))
    except ValueError as exc:  # asyncssh.KeyImportError is a ValueError
        raise Refused(f"Key not added: {exc}.") from None
    login.save(update_fields=["public_keys"])
    return (
        f"added SSH key {fingerprint} to SFTP login {login.name}",
        f"Key {fingerprint} added to {login.name}.",
    )


@login_change
def allow_list(request, login: Login) -> tuple[str, str]:
    login.allowed_ips = request.POST.get("allowed_ips", "").strip()
    try:
        login.clean()
    except ValidationError as exc:
        raise Refused(f"Allow list not saved: {' '.join(exc.messages)}") from None
    login.save(update_fields=["allowed_ips"])
    return f"changed the IP allow list of SFTP login {login.name}", "IP allow list saved."


@login_change
def permissions(request, login: Login) -> tuple[str, str]:
    form = LoginPermissionsForm(request.POST)
    if not form.is_valid():
        raise Refused(f"Permissions not saved: {' '.join(form.errors.get('permissions', []))}")
    login.permissions = form.cleaned_data["permissions"]
    login.save(update_fields=["permissions"])
    granted = ", ".join(["upload", *login.permissions])
    return f"permissions of SFTP login {login.name}: {granted}", f"{login.name} may now: {granted}."
