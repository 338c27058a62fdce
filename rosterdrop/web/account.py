"""A console user's own account: set a password from an invitation or reset mail, change it;
the time zone their pages show times in; API tokens, named, expiring and revocable (also
`rosterdrop token`).

Django's auth views do the work; these subclasses only audit and queue the mail in the
outbox (a web request never waits on SMTP). Changing a password ends the user's other
sessions: Django checks each session against the password's hash.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm
from django.shortcuts import get_object_or_404, redirect, render
from django.template import loader
from django.urls import reverse_lazy
from django.views.decorators.http import require_POST

from rosterdrop import notify
from rosterdrop.accounts.decorators import audit_admin
from rosterdrop.accounts.models import ApiToken, Profile
from rosterdrop.accounts.zones import zone_of
from rosterdrop.web.forms import TimeZoneForm, TokenForm


class QueuedPasswordResetForm(PasswordResetForm):
    """Django's reset form, its mail queued in the outbox rather than sent in the request."""

    def send_mail(self, subject_template_name, email_template_name, context, from_email,
                  to_email, html_email_template_name=None):  # fmt: skip
        subject = "".join(loader.render_to_string(subject_template_name, context).splitlines())
        body = loader.render_to_string(email_template_name, context)
        notify.mail_later(f"reset:{context['uid']}:{context['token']}", to_email, subject, body)


class PasswordReset(auth_views.PasswordResetView):
    form_class = QueuedPasswordResetForm
    email_template_name = "registration/password_reset_email.txt"
    extra_email_context = {"base_url": settings.BASE_URL.rstrip("/")}


class PasswordResetConfirm(auth_views.PasswordResetConfirmView):
    """Sets the password of an invitation or a reset mail, then signs the person in."""

    post_reset_login = True
    post_reset_login_backend = "django.contrib.auth.backends.ModelBackend"
    success_url = reverse_lazy("web:home")

    def form_valid(self, form):
        response = super().form_valid(form)
        audit_admin(self.request, "set their password from a mailed link")
        messages.success(self.request, "Password set; you are signed in.")
        return response


class PasswordChange(auth_views.PasswordChangeView):
    success_url = reverse_lazy("web:account")

    def form_valid(self, form):
        response = super().form_valid(form)
        audit_admin(self.request, "changed their password")
        messages.success(self.request, "Password changed; your other sessions are signed out.")
        return response


def _default_zone(user) -> str:
    """The zone the person's times are in unless they choose one."""
    profile = getattr(user, "profile", None)
    district = profile.district if profile is not None else None
    if district is not None:
        return f"{district.name}'s ({zone_of(None, district)})"
    return f"the server's ({zone_of(None)})"


@login_required
def account(request, shown: str = "", form=None):
    """The user's own API tokens (never their secret, once made) and a form for a new one;
    their time zone."""
    profile = getattr(request.user, "profile", None)
    zone = TimeZoneForm(
        initial={"time_zone": profile.time_zone if profile else ""},
        default=_default_zone(request.user),
    )
    return render(
        request,
        "web/account.html",
        {
            "tokens": request.user.api_tokens.all(),
            "form": form or TokenForm(),
            "shown": shown,
            "zone_form": zone,
        },
    )


@require_POST
@login_required
def time_zone(request):
    form = TimeZoneForm(request.POST, default=_default_zone(request.user))
    if not form.is_valid():
        messages.error(request, "Choose a time zone from the list.")
        return redirect("web:account")
    chosen = form.cleaned_data["time_zone"]
    Profile.objects.update_or_create(user=request.user, defaults={"time_zone": chosen})
    audit_admin(request, f"set their time zone to {chosen or 'the default'}")
    messages.success(request, f"Times are now shown in {chosen or _default_zone(request.user)}.")
    return redirect("web:account")


@require_POST
@login_required
def token_create(request):
    form = TokenForm(request.POST)
    if not form.is_valid():
        return account(request, form=form)
    days = int(form.cleaned_data["days"]) or None
    token = ApiToken.issue(request.user, name=form.cleaned_data["name"], days=days)
    audit_admin(request, f"made API token {token[:10]}… ({form.cleaned_data['name']})")
    return account(request, shown=token)


@require_POST
@login_required
def token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token.delete()
    audit_admin(request, f"revoked API token {token.hint}… ({token.name})")
    messages.success(request, f"Token {token.hint}… revoked; it opens nothing any more.")
    return redirect("web:account")
