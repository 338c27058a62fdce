"""View decorators: sign-in, the district from the URL checked against the user, operators;
and who made an admin change from where. Below the delivery apps, so that the console and the
OneRoster service's console pages check a request alike without importing each other."""

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from rosterdrop.accounts.access import district_or_404, is_operator
from rosterdrop.accounts.zones import zone_of
from rosterdrop.audit.models import AuditEvent, record


def district_view(view):
    """Resolve `slug` to a district this user may see (404 otherwise) and pass it on; the
    page shows times in the user's own time zone, else the district's (zones.zone_of)."""

    @login_required
    @wraps(view)
    def wrapper(request, slug: str, *args, **kwargs):
        district = district_or_404(request.user, slug)
        with timezone.override(zone_of(request.user, district)):
            return view(request, district, *args, **kwargs)

    return wrapper


def operator_view(view):
    """A page only operators may use (a signed-in district admin gets 403)."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        require_operator(request)
        return view(request, *args, **kwargs)

    return wrapper


def operator_district_view(view):
    """A district page only operators may use."""

    @district_view
    @wraps(view)
    def wrapper(request, district, *args, **kwargs):
        require_operator(request)
        return view(request, district, *args, **kwargs)

    return wrapper


def require_operator(request) -> None:
    if not is_operator(request.user):
        raise PermissionDenied("Only operators can do this.")


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR")


def audit_admin(request, detail: str) -> None:
    """An admin change (settings, templates, notifications) in the audit log: who, from where."""
    record(
        AuditEvent.Kind.ADMIN,
        login=request.user.get_username(),
        ip=client_ip(request),
        detail=detail,
    )
