from django.contrib.auth import views as auth_views
from django.urls import include, path

from rosterdrop.api.api import api
from rosterdrop.oneroster.api import router as export_router
from rosterdrop.web import account

# The OneRoster export on the JSON API: mounted here, where the delivery apps meet, since the
# api and oneroster apps are siblings in one layer and import nothing of each other.
api.add_router("", export_router)

urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", account.PasswordChange.as_view(), name="password_change"),
    path("accounts/reset/", account.PasswordReset.as_view(), name="password_reset"),
    path(
        "accounts/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        account.PasswordResetConfirm.as_view(),
        name="password_reset_confirm",
    ),
    path("", include("rosterdrop.ops.urls")),  # /healthz, /readyz, /metrics
    path("api/", api.urls),
    path("", include("rosterdrop.oneroster.urls")),
    path("", include("rosterdrop.web.urls")),
]
