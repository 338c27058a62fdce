"""`rosterdrop worker`: imports from the job queue, in as many processes as the load needs.

Needs PostgreSQL (the queue is procrastinate's tables there); front ends (`rosterdrop serve
--no-worker`) put a job in the queue for each upload. SIGTERM (or Ctrl-C): no new job is taken,
the imports running get ROSTERDROP_SHUTDOWN_SECONDS to finish, and those still running then
are handed back (another worker imports them again once; nothing was applied) and the process
exits with status 75.
"""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from rosterdrop.feed import webhooks
from rosterdrop.intake import queue
from rosterdrop.notify import mailer


class Command(BaseCommand):
    help = "Run an import worker of the job queue (PostgreSQL; start as many as you need)."
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency",
            type=int,
            default=settings.WORKER_CONCURRENCY,
            help="Imports this process runs at once (ROSTERDROP_WORKER_CONCURRENCY).",
        )

    def handle(self, *args, concurrency: int, **options):
        if not settings.JOB_QUEUE:
            raise CommandError(
                "the job queue needs PostgreSQL (ROSTERDROP_DATABASE_URL): on SQLite "
                "`rosterdrop serve` imports in a worker thread of its own"
            )
        if concurrency < 1:
            raise CommandError("--concurrency must be 1 or more")
        queue.prepare()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        mailer.start(stop)  # the mails and webhooks its imports queue, sent from here too
        webhooks.start(stop)
        self.stdout.write(
            f"rosterdrop worker: {concurrency} at once, queue {queue.QUEUE!r}. Ready."
        )
        self.stdout.flush()
        status = queue.run(stop, concurrency, settings.SHUTDOWN_SECONDS)
        mailer.wake()
        webhooks.wake()
        if status:
            raise SystemExit(status)
