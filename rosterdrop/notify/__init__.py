"""Email notifications: queued in an outbox table, sent later, so a mail server never blocks
or fails an import.

Call `sync_finished(sync)` once a sync has its final status and `upload_unmatched(upload)` when a
file matched nothing; both only write outbox rows and never raise. `send_pending()` drains the
outbox (the worker, `rosterdrop notify send` or the web import thread call it).
"""


def sync_finished(sync) -> None:
    from rosterdrop.notify.events import sync_finished

    sync_finished(sync)


def upload_unmatched(upload) -> None:
    from rosterdrop.notify.events import upload_unmatched

    upload_unmatched(upload)


def send_pending(limit: int = 200) -> int:
    from rosterdrop.notify.outbox import send_pending

    return send_pending(limit)
