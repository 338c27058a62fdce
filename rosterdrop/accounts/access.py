"""The one place that decides which districts a user may see; every view and API call uses it."""

from django.db.models import QuerySet
from django.http import Http404

from rosterdrop.districts.models import District


def is_operator(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def districts_for(user) -> QuerySet[District]:
    if is_operator(user):
        return District.objects.all()
    if not user.is_authenticated or not user.is_active:
        return District.objects.none()
    return District.objects.filter(admins__user=user)


def district_or_404(user, slug: str) -> District:
    """404, not 403, for another district's slug: its existence is not disclosed either."""
    try:
        return districts_for(user).get(slug=slug)
    except District.DoesNotExist:
        raise Http404("No such district.") from None


def may_decide_holds(user, district: District) -> bool:
    """Operators decide every held sync; a district's admins theirs when it lets them."""
    if is_operator(user):
        return True
    return district.admins_decide_holds and districts_for(user).filter(pk=district.pk).exists()
