"""Who is told about a district's imports, and the mails waiting to be sent."""

from django.db import models

from rosterdrop.districts.models import District


class Subscription(models.Model):
    """An address told about a district's problems; about successes only if it opted in."""

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="subscriptions")
    email = models.EmailField()
    on_success = models.BooleanField(default=False, help_text="Also mail when a sync applied.")

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(fields=["district", "email"], name="subscription_unique")
        ]

    def __str__(self) -> str:
        return f"{self.email} ({self.district.slug})"


class OutboxMail(models.Model):
    """One mail to one address. `key` names the event, so an event is never mailed twice."""

    key = models.CharField(max_length=100)
    to = models.EmailField()
    subject = models.CharField(max_length=300)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["key", "to"], name="outbox_unique")]

    def __str__(self) -> str:
        return f"{self.key} -> {self.to}"
