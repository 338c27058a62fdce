"""The mail thread of `rosterdrop serve`: the only place that talks to the SMTP server.

Imports, the worker and web requests only queue mails (outbox rows) and `wake()` this thread;
none of them ever waits on SMTP. A server that accepts and never answers holds only this
thread, for at most ROSTERDROP_SMTP_TIMEOUT per network step, and the mails it could not take
are retried with their backoff (`outbox.py`).
"""

import logging
import threading

from django.db import close_old_connections

from rosterdrop.notify.outbox import send_pending

log = logging.getLogger(__name__)

# Mails whose retry comes due are picked up at least this often without a wake().
POLL_SECONDS = 30.0

_wake = threading.Event()


def wake() -> None:
    """A mail was queued: send it now rather than at the next poll. Never blocks."""
    _wake.set()


# Mails sent per connection; a fuller outbox is drained batch after batch, without waiting.
BATCH = 200


def run_forever(stop: threading.Event, poll: float = POLL_SECONDS) -> None:
    while not stop.is_set():
        _wake.clear()
        sent = 0
        try:
            sent = send_pending(BATCH)
        except Exception:  # send_pending keeps SMTP errors; anything else must not end mail
            log.exception("mail pass failed")
        finally:
            close_old_connections()
        if sent < BATCH:
            _wake.wait(poll)


def start(stop: threading.Event, poll: float = POLL_SECONDS) -> threading.Thread:
    thread = threading.Thread(target=run_forever, args=(stop, poll), name="mailer", daemon=True)
    thread.start()
    return thread
