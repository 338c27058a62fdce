from django.urls import path

from rosterdrop.oneroster import views

urlpatterns = [
    path("oneroster/token", views.token, name="oneroster-token"),
    path("oneroster/revoke", views.revoke, name="oneroster-revoke"),
    path(f"oneroster/<slug:slug>/{views.BASE}/<path:rest>", views.service, name="oneroster"),
]
