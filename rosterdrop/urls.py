from django.contrib.auth import views as auth_views
from django.urls import include, path

from rosterdrop.api.api import api

urlpatterns = [
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/", api.urls),
    path("", include("rosterdrop.oneroster.urls")),
    path("", include("rosterdrop.web.urls")),
]
