import re

from django.urls import path, re_path

from rosterdrop.oneroster import console, views

urlpatterns = [
    path("oneroster/token", views.token, name="oneroster-token"),
    path("oneroster/revoke", views.revoke, name="oneroster-revoke-token"),
    # Any characters after the base, line breaks included (`<path:>` stops at one): an ID the
    # roster cannot hold still gets the binding's JSON 404, not the console's page.
    re_path(
        rf"^oneroster/(?P<slug>[-a-zA-Z0-9_]+)/{re.escape(views.BASE)}/(?P<rest>[\s\S]+)\Z",
        views.service,
        name="oneroster",
    ),
    # The console's Reading page of a district.
    path("d/<slug:slug>/reading/", console.reading, name="oneroster-reading"),
    path("d/<slug:slug>/reading/clients/", console.add_client, name="oneroster-add-client"),
    path("d/<slug:slug>/reading/clients/<int:pk>/revoke/", console.revoke, name="oneroster-revoke"),
    path("d/<slug:slug>/reading/export.zip", console.export, name="oneroster-export"),
    path("d/<slug:slug>/reading/webhooks/", console.add_webhook, name="oneroster-add-webhook"),
    path(
        "d/<slug:slug>/reading/webhooks/<int:pk>/remove/",
        console.remove_webhook,
        name="oneroster-remove-webhook",
    ),
]
