"""The audit log: operators see everything; a district admin sees the events of their own
district's people and SFTP logins."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.shortcuts import render

from rosterdrop.accounts.access import districts_for, is_operator
from rosterdrop.accounts.models import Profile
from rosterdrop.audit.models import AuditEvent
from rosterdrop.intake.models import Login


def _logins(districts) -> set[str]:
    names = set(
        Profile.objects.filter(district__in=districts).values_list("user__username", flat=True)
    )
    return names | set(Login.objects.filter(district__in=districts).values_list("name", flat=True))


@login_required
def audit_log(request):
    events = AuditEvent.objects.all()
    if not is_operator(request.user):
        events = events.filter(login__in=_logins(districts_for(request.user)))
    kind = request.GET.get("kind", "")
    if kind:
        events = events.filter(kind=kind)
    query = request.GET.get("q", "").strip()
    if query:
        events = events.filter(Q(login__icontains=query) | Q(detail__icontains=query))
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(
        request,
        "web/audit.html",
        {
            "page": page,
            "kinds": AuditEvent.Kind.choices,
            "kind": kind,
            "query": query,
        },
    )
