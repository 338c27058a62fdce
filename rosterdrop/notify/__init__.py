"""Email notifications: queued in an outbox table, sent later by their own thread, so a mail
server never blocks or fails an import.

Call `sync_finished(sync)` once a sync has its final status and `upload_unmatched(upload)` when a
file matched nothing; both only write outbox rows, wake the mail thread and never raise.
`send_pending()` drains the outbox: the mail thread of `serve` (`mailer.py`) and
`rosterdrop notify send` call it, nothing that runs or waits on an import.
"""


def sync_finished(sync) -> None:
    from rosterdrop.notify import mailer
    from rosterdrop.notify.events import sync_finished

    sync_finished(sync)
    mailer.wake()


def upload_unmatched(upload) -> None:
    from rosterdrop.notify import mailer
    from rosterdrop.notify.events import upload_unmatched

    upload_unmatched(upload)
    mailer.wake()


def send_pending(limit: int = 200) -> int:
    from rosterdrop.notify.outbox import send_pending

    return send_pending(limit)


def mail_later(key: str, to: str, subject: str, body: str) -> None:
    """One mail outside imports (an invitation, a password reset): queued like the others."""
    from rosterdrop.notify import mailer
    from rosterdrop.notify.outbox import queue

    queue(key, [to], subject, body)
    mailer.wake()
