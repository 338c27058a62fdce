"""Queueing and sending mails, with retries that back off; errors are kept, never raised."""

import contextlib
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.utils import timezone

from rosterdrop.notify.models import OutboxMail

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
# A sender claims a mail for this long, so two drains at once do not both send it.
CLAIM = timedelta(minutes=5)


def enabled() -> bool:
    return bool(settings.EMAIL_HOST)


def queue(key: str, to: list[str], subject: str, body: str) -> int:
    """Add one mail per address unless this event was already queued for it."""
    now = timezone.now()
    added = 0
    for address in dict.fromkeys(to):
        try:
            with transaction.atomic():
                OutboxMail.objects.create(
                    key=key, to=address, subject=subject[:300], body=body, next_attempt_at=now
                )
            added += 1
        except IntegrityError:
            pass  # the same event told twice (e.g. a re-delivered job)
    return added


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(60 * 2 ** (attempts - 1), 3600))


def _failed(mail: OutboxMail, error: Exception, now: datetime) -> None:
    mail.attempts += 1
    mail.last_error = f"{type(error).__name__}: {error}"[:2000]
    mail.next_attempt_at = now + backoff(mail.attempts)
    mail.save(update_fields=["attempts", "last_error", "next_attempt_at"])


def due(now: datetime):
    return OutboxMail.objects.filter(
        sent_at__isnull=True, attempts__lt=MAX_ATTEMPTS, next_attempt_at__lte=now
    )


def send_pending(limit: int = 200) -> int:
    """Send what is due over one connection; return how many were sent. Never raises."""
    if not enabled():
        return 0
    now = timezone.now()
    mails = list(due(now)[:limit])
    if not mails:
        return 0
    connection = get_connection(fail_silently=False)
    try:
        connection.open()
    except Exception as exc:  # server down: every due mail waits for its next try
        log.warning("mail server unreachable (%s); %d mails wait", exc, len(mails))
        for mail in mails:
            _failed(mail, exc, now)
        return 0
    sent = 0
    try:
        for mail in mails:
            claimed = OutboxMail.objects.filter(
                pk=mail.pk, sent_at__isnull=True, next_attempt_at=mail.next_attempt_at
            ).update(next_attempt_at=now + CLAIM)
            if not claimed:
                continue
            message = EmailMessage(
                mail.subject,
                mail.body,
                settings.DEFAULT_FROM_EMAIL,
                [mail.to],
                connection=connection,
            )
            try:
                message.send()
            except Exception as exc:
                _failed(mail, exc, now)
                continue
            OutboxMail.objects.filter(pk=mail.pk).update(sent_at=timezone.now(), last_error="")
            sent += 1
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    return sent
