"""The console's "Reading" page of a district: how the vendor's product reads its roster --
OneRoster clients, the CSV export, the change feed and its webhooks (with their delivery log).
Operators create and revoke clients and webhooks; a district's admins see them and download."""

from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from rosterdrop.accounts.decorators import (
    audit_admin,
    client_ip,
    district_view,
    operator_district_view,
)
from rosterdrop.feed import webhooks
from rosterdrop.feed.models import Counter, Subscription
from rosterdrop.ingest.models import Sync
from rosterdrop.oneroster.clients import create_client, revoke_client
from rosterdrop.oneroster.models import SCOPES, Client
from rosterdrop.oneroster.views import BASE, package_download
from rosterdrop.roster.models import ENTITIES

APPLIED = ("applied", "applied_with_errors")


def _page(request, district, shown: dict | None = None):
    subscriptions = Subscription.objects.filter(district=district).prefetch_related("deliveries")
    counter = Counter.objects.filter(pk=district.pk).first()
    return render(
        request,
        "oneroster/reading.html",
        {
            "district": district,
            "clients": Client.objects.filter(district=district),
            "scopes": SCOPES,
            "base_url": request.build_absolute_uri(f"/oneroster/{district.slug}/{BASE}"),
            "token_url": request.build_absolute_uri("/oneroster/token"),
            "syncs": Sync.objects.filter(district=district, status__in=APPLIED)[:50],
            "subscriptions": [(s, list(s.deliveries.order_by("-id")[:10])) for s in subscriptions],
            "entities": ENTITIES,
            "last_seq": counter.last_seq if counter else 0,
            "shown": shown,
        },
    )


@district_view
def reading(request, district):
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    return _page(request, district)


@require_POST
@operator_district_view
def add_client(request, district):
    scopes = [s for s in request.POST.getlist("scope") if s in SCOPES]
    name = request.POST.get("name", "").strip()[:100] or "Vendor app"
    client, secret = create_client(name, district, scopes)
    audit_admin(request, f"OneRoster client {client.client_id} ({name}) for {district.slug}")
    shown = {
        "title": f"Client {name}",
        "lines": [("client_id", client.client_id), ("client_secret", secret)],
    }
    return _page(request, district, shown)


@require_POST
@operator_district_view
def revoke(request, district, pk: int):
    client = get_object_or_404(Client, pk=pk, district=district)
    revoke_client(client)
    audit_admin(request, f"OneRoster client {client.client_id} of {district.slug} revoked")
    return redirect("oneroster-reading", slug=district.slug)


@require_POST
@operator_district_view
def add_webhook(request, district):
    url = request.POST.get("url", "").strip()
    if not url.startswith(("https://", "http://")):
        return redirect("oneroster-reading", slug=district.slug)
    entities = [e for e in request.POST.getlist("entity") if e in ENTITIES]
    sub = webhooks.subscribe(district, url, entities)
    audit_admin(request, f"webhook {sub.pk} of {district.slug} to {url}")
    shown = {"title": f"Webhook to {url}", "lines": [("signing secret", sub.secret)]}
    return _page(request, district, shown)


@require_POST
@operator_district_view
def remove_webhook(request, district, pk: int):
    get_object_or_404(Subscription, pk=pk, district=district).delete()
    audit_admin(request, f"webhook {pk} of {district.slug} removed")
    return redirect("oneroster-reading", slug=district.slug)


@district_view
def export(request, district):
    """The OneRoster 1.2 CSV package: bulk, or ?since=SYNC for a delta."""
    since = request.GET.get("since", "")
    after = None
    if since:
        after = get_object_or_404(Sync, pk=int(since) if since.isdigit() else 0, district=district)
    return package_download(
        district, after, request.user.get_username(), client_ip(request), "console"
    )
