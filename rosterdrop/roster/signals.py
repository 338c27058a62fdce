"""A district has a roster token from the moment it exists: store.roster_token reads it and
store.claim_roster moves it, neither ever creates it."""

from django.db.models.signals import post_save
from django.dispatch import receiver

from rosterdrop.districts.models import District
from rosterdrop.roster.models import RosterToken


@receiver(post_save, sender=District)
def give_roster_token(
    sender: type[District], instance: District, created: bool, raw: bool, **kwargs: object
) -> None:
    # raw: a fixture being loaded brings its own rows.
    if created and not raw:
        RosterToken.objects.create(district=instance)
