"""Console users: operators invite operators and district admins by mail.

The invitation is a link to Django's own set-password page (a PasswordResetTokenGenerator
token), so no password is ever chosen or sent by anyone but the person invited.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.http import require_POST

from rosterdrop import notify
from rosterdrop.accounts.decorators import audit_admin, operator_view
from rosterdrop.accounts.models import Profile
from rosterdrop.web.forms import InviteForm


def set_password_link(user) -> str:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    path = reverse("password_reset_confirm", args=[uid, default_token_generator.make_token(user)])
    return settings.BASE_URL.rstrip("/") + path


def _page(request, form=None):
    users = get_user_model().objects.select_related("profile__district").order_by("username")
    return render(request, "web/people.html", {"users": users, "form": form or InviteForm()})


@operator_view
def people(request):
    return _page(request)


@require_POST
@operator_view
def invite(request):
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _page(request, form)
    email, district = form.cleaned_data["email"].lower(), form.cleaned_data["district"]
    users = get_user_model().objects
    if users.filter(username=email).exists():
        form.add_error("email", "This person has an account already.")
        return _page(request, form)
    with transaction.atomic():
        user = users.create_user(email, email, None, is_staff=district is None)
        Profile.objects.create(user=user, district=district)
    role = f"district admin of {district.name}" if district else "operator"
    notify.mail_later(
        f"invite:{user.pk}:{timezone.now():%Y%m%d%H%M%S}",
        email,
        "Your rosterdrop account",
        f"{request.user.get_username()} invited you to rosterdrop as {role}.\n\n"
        f"Choose your password here (the link works once, for "
        f"{settings.PASSWORD_RESET_TIMEOUT // 86400} days):\n{set_password_link(user)}\n\n"
        f"Then sign in with this email address: {email}\n",
    )
    audit_admin(request, f"invited {email} as {role}")
    messages.success(request, f"Invitation mailed to {email} ({role}).")
    return redirect("web:people")
