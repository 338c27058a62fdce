"""Which time zone a page shows its times in: the person's own choice (their account page),
else the district's (the page's, or the one a district admin administers), else the server's
(settings.TIME_ZONE). Django's templates convert every time to the zone made current here."""

from django.conf import settings
from django.utils import timezone


def zone_of(user, district=None) -> str:
    profile = getattr(user, "profile", None)  # none for the anonymous user
    if profile is not None and profile.time_zone:
        return profile.time_zone
    if district is None and profile is not None:
        district = profile.district
    if district is not None and district.time_zone:
        return district.time_zone
    return settings.TIME_ZONE


class TimeZoneMiddleware:
    """Every page in the signed-in person's zone; a district's pages narrow it further
    (decorators.district_view)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with timezone.override(zone_of(request.user)):
            return self.get_response(request)
