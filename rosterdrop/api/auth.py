"""Bearer tokens (`rosterdrop token create EMAIL` or the console's Account page), unexpired;
the user's districts bound every call."""

from datetime import timedelta

from django.utils import timezone
from ninja.security import HttpBearer

from rosterdrop.accounts.models import ApiToken, digest


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        found = ApiToken.valid().select_related("user").filter(digest=digest(token)).first()
        if found is None:
            return None
        now = timezone.now()
        if found.last_used_at is None or now - found.last_used_at > timedelta(minutes=5):
            ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
        return found.user
