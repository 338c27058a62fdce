"""What the commands that take a district's slug share: one lookup, one error."""

from django.core.management.base import CommandError

from rosterdrop.districts.models import District


def district_named(slug: str) -> District:
    """The district with this slug, or the one-line error every command gives for a typo."""
    try:
        return District.objects.get(slug=slug)
    except District.DoesNotExist:
        raise CommandError(f"no district {slug!r}; `rosterdrop district list` shows them") from None
