"""District accounts: who sends files, in which format, with which safety settings."""

import zoneinfo
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


def time_zone_name(value: str) -> None:
    """An IANA time zone name (a typo would show every time wrongly)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value} is not a time zone name such as America/Chicago.") from None


class District(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    format = models.CharField(
        max_length=40, help_text="Slug of the roster format this district sends."
    )
    removal_threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="Share (0-1) of any entity a sync may remove before it is held; blank = default.",
    )
    fallback_encoding = models.CharField(
        max_length=40,
        default="cp1252",
        blank=True,
        help_text="Used when a file is not valid UTF-8 and has no byte order mark.",
    )
    quiet_period_seconds = models.PositiveIntegerField(
        default=300, help_text="Loose files are imported together after this long with no upload."
    )
    upload_quota_bytes = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes of raw uploads this district may keep; blank = the default.",
    )
    paused = models.BooleanField(
        default=False, help_text="Uploads are received but not imported until unticked."
    )
    expected_every_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=24,
        help_text="How often files should arrive (24 = nightly); later than that (and an hour) "
        "the dashboard flags the district as late. Blank = no schedule.",
    )
    # "Import now" asks the worker to import the waiting loose files without waiting out
    # the quiet period: those received up to this time.
    import_requested_at = models.DateTimeField(null=True, blank=True, editable=False)
    admins_decide_holds = models.BooleanField(
        default=False,
        help_text="The district's own admins may approve or discard its held syncs "
        "(operators always may).",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[time_zone_name],
        help_text="IANA name, e.g. America/Chicago: the district's times are shown in it.",
    )
    strict = models.BooleanField(
        default=False,
        help_text="Take files only as the specification writes them: what real exports "
        "commonly get wrong (accepted with a warning otherwise) refuses the upload.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug

    def pause_on(self, when: datetime) -> "Pause | None":
        """The scheduled pause covering this moment's date in the district's time zone."""
        today = timezone.localtime(when, zoneinfo.ZoneInfo(self.time_zone or "UTC")).date()
        return self.pauses.filter(starts_on__lte=today, ends_on__gte=today).first()

    def paused_at(self, when: datetime) -> bool:
        """Uploads are received but not imported: paused by hand or by a scheduled pause."""
        return self.paused or self.pause_on(when) is not None

    @property
    def cadence(self) -> str:
        hours = self.expected_every_hours
        return {24: "nightly", 168: "weekly"}.get(hours, f"every {hours} h") if hours else ""

    @property
    def effective_removal_threshold(self) -> float:
        if self.removal_threshold is None:
            return settings.REMOVAL_THRESHOLD
        return self.removal_threshold

    @property
    def effective_upload_quota(self) -> int:
        if self.upload_quota_bytes is None:
            return settings.DISTRICT_QUOTA_BYTES
        return self.upload_quota_bytes


class Pause(models.Model):
    """A scheduled pause (summer, a term rollover): files sent meanwhile are received and
    kept, and imported in the order they came once it ends."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="pauses")
    starts_on = models.DateField()
    ends_on = models.DateField(help_text="The last day of the pause, included.")
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["starts_on"]

    def __str__(self) -> str:
        return f"{self.district} {self.starts_on}..{self.ends_on}"

    def clean(self) -> None:
        if self.starts_on and self.ends_on and self.ends_on < self.starts_on:
            raise ValidationError({"ends_on": "The pause ends before it starts."})
