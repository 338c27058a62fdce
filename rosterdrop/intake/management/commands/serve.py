"""`rosterdrop serve`: web, SFTP, FTPS and the import worker in one process, ready at once.

On SQLite the worker is a thread (intake/worker.py); on PostgreSQL it is a procrastinate worker
of the job queue (intake/queue.py), like `rosterdrop worker`, so that any number of `serve`
processes on one database import each upload once. `--no-worker` (PostgreSQL only) runs the
front ends alone, for deployments with `rosterdrop worker` processes of their own.

SIGTERM (or Ctrl-C) stops it gracefully: no new connection is accepted, uploads in flight and
the import running get ROSTERDROP_SHUTDOWN_SECONDS to finish; then the connections left are
closed (a cut upload is never kept: the client sees a failure and sends again) and the import
is handed back to the queue (or, on SQLite, recovered at the next start), as after a crash.
"""

import asyncio
import os
import secrets
import signal
import threading
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rosterdrop import networks
from rosterdrop.districts.models import District
from rosterdrop.feed import webhooks
from rosterdrop.intake import hostkey, queue, sftp, sftp_workers, tlscert, worker
from rosterdrop.intake.models import Login
from rosterdrop.notify import mailer

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Run the web server, the SFTP and FTPS servers and the import worker (embedded default)."
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        env = os.environ.get
        parser.add_argument(
            "--host",
            default=env("ROSTERDROP_HOST", "127.0.0.1"),
            help="Bind address (0.0.0.0 to accept other machines).",
        )
        parser.add_argument("--web-port", type=int, default=int(env("ROSTERDROP_WEB_PORT", "8000")))
        parser.add_argument("--sftp-port", type=int, default=settings.SFTP_PORT)
        parser.add_argument(
            "--sftp-processes",
            type=int,
            default=settings.SFTP_PROCESSES,
            help="SFTP worker processes beside this one (1: SFTP in this process).",
        )
        parser.add_argument(
            "--ftps-port",
            type=int,
            default=settings.FTPS_PORT,
            help="Explicit FTPS (AUTH TLS).",
        )
        parser.add_argument(
            "--ftps-implicit-port",
            type=int,
            default=settings.FTPS_IMPLICIT_PORT,
            help="Implicit FTPS (TLS from the first byte).",
        )
        parser.add_argument("--no-ftps", action="store_true", help="Do not start FTPS.")
        parser.add_argument(
            "--no-demo", action="store_true", help="Do not create the demo district."
        )
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Front ends only (SFTP, FTPS, web): `rosterdrop worker` imports (PostgreSQL).",
        )

    def handle(
        self,
        *args,
        host: str,
        web_port: int,
        sftp_port: int,
        sftp_processes: int,
        ftps_port: int,
        ftps_implicit_port: int,
        no_ftps: bool,
        no_demo: bool,
        no_worker: bool,
        **options,
    ):
        if sftp_processes < 1:
            raise CommandError("--sftp-processes (ROSTERDROP_SFTP_PROCESSES) must be 1 or more")
        if no_worker and not settings.JOB_QUEUE:
            raise CommandError(
                "--no-worker needs PostgreSQL (ROSTERDROP_DATABASE_URL): on SQLite serve's own "
                "worker thread imports the uploads"
            )
        try:
            networks.parse_networks(settings.TRUSTED_PROXIES)
        except ValueError as exc:
            raise CommandError(f"ROSTERDROP_TRUSTED_PROXIES: {exc}") from None
        # The console (same process) shows where SFTP and FTPS listen.
        settings.SFTP_PORT = sftp_port
        settings.FTPS_PORT, settings.FTPS_IMPLICIT_PORT = ftps_port, ftps_implicit_port
        settings.FTPS_ENABLED = not no_ftps
        queue.prepare()
        (_, key_print), *other_keys = hostkey.fingerprints()
        lines = [f"rosterdrop {settings.DATA_DIR}"]
        lines += self._operator()
        if not no_demo:
            lines += self._demo(host, sftp_port)
        stop = threading.Event()
        urls = [
            f"  web:      http://{host}:{web_port}/",
            f"  sftp:     {host} port {sftp_port}"
            + (f" ({sftp_processes} processes)" if sftp_processes > 1 else ""),
            f"  host key: {key_print}",
            *(f"  also:     {printed} ({algorithm})" for algorithm, printed in other_keys),
        ]
        threads = []
        if not no_ftps:
            threads.append(self._start_ftps(host, ftps_port, ftps_implicit_port, stop))
            urls += [
                f"  ftps:     {host} port {ftps_port} (explicit, AUTH TLS), "
                f"port {ftps_implicit_port} (implicit)",
                f"  ftps cert: {tlscert.fingerprint()}",
            ]
        lines[1:1] = urls
        web = self._start_web(host, web_port)
        if not no_worker:
            threads.append(self._start_worker(stop))
        mailer.start(stop)  # SMTP on its own thread: no import waits on it
        webhooks.start(stop)  # signed webhooks from their outbox, on their own thread

        def stopping() -> None:
            if stop.is_set():
                return
            stop.set()
            worker.wake()
            mailer.wake()
            webhooks.wake()
            web.close()

        try:
            asyncio.run(self._run_sftp(host, sftp_port, sftp_processes, lines, stopping))
        finally:
            stopping()
        deadline = time.monotonic() + settings.SHUTDOWN_SECONDS + 1
        for thread in threads:  # FTPS transfers and the import, given the same grace
            thread.join(max(0.0, deadline - time.monotonic()))

    def _operator(self) -> list[str]:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return []
        password = os.environ.get("ROSTERDROP_OPERATOR_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser("operator", "", password)
        return [f"  operator: operator / {password}  (shown once; change it after logging in)"]

    def _demo(self, host: str, sftp_port: int) -> list[str]:
        district, created = District.objects.get_or_create(
            slug=DEMO_SLUG,
            defaults={
                "name": "Demo School District",
                "format": "oneroster-1.1",
                "quiet_period_seconds": int(os.environ.get("ROSTERDROP_DEMO_QUIET_SECONDS", "60")),
            },
        )
        login = Login.objects.filter(district=district).first()
        if login is None:
            password = os.environ.get("ROSTERDROP_DEMO_SFTP_PASSWORD") or secrets.token_urlsafe(12)
            login = Login(district=district, name=DEMO_SLUG)
            login.set_password(password)
            login.save()
            shown = f"password: {password}  (shown once)"
        else:
            shown = (
                "password: shown at first start (to set a new one: "
                f"rosterdrop sftp-user passwd {login.name} --password-stdin)"
            )
        return [
            f"  demo district {district.slug} ({district.format}):",
            f"    sftp -P {sftp_port} {login.name}@{host}",
            f"    username: {login.name}  {shown}",
        ]

    def _start_ftps(self, host: str, port: int, implicit_port: int, stop: threading.Event):
        from rosterdrop.intake.ftps import FTPSService

        try:
            service = FTPSService(host, port, implicit_port)
        except OSError as exc:
            raise CommandError(
                f"cannot start FTPS on {host}:{port}/{implicit_port}: {exc}"
            ) from None
        thread = threading.Thread(
            target=service.run, args=(stop, settings.SHUTDOWN_SECONDS), name="ftps", daemon=True
        )
        thread.start()
        return thread

    def _start_worker(self, stop: threading.Event) -> threading.Thread:
        if settings.JOB_QUEUE:  # a procrastinate worker, as `rosterdrop worker` runs
            grace = settings.SHUTDOWN_SECONDS
            args = (stop, settings.WORKER_CONCURRENCY, grace)
            thread = threading.Thread(target=queue.run, args=args, name="worker", daemon=True)
        else:
            thread = threading.Thread(
                target=worker.run_forever, args=(stop,), name="worker", daemon=True
            )
        thread.start()
        return thread

    def _start_web(self, host: str, port: int):
        from django.core.wsgi import get_wsgi_application
        from waitress.server import create_server

        try:
            # X-Forwarded-For reaches Django, which believes it only from the trusted proxies
            # (ops.proxies); waitress would drop it, knowing no CIDRs.
            server = create_server(
                get_wsgi_application(),
                host=host,
                port=port,
                threads=4,
                clear_untrusted_proxy_headers=False,
            )
        except OSError as exc:
            raise CommandError(f"cannot listen for the web on {host}:{port}: {exc}") from None
        threading.Thread(target=server.run, name="web", daemon=True).start()
        return server

    async def _run_sftp(
        self, host: str, port: int, processes: int, lines: list[str], stopping
    ) -> None:
        try:
            sock = sftp.listen(host, port)
        except OSError as exc:
            raise CommandError(f"cannot listen for SFTP on {host}:{port}: {exc}") from None
        handler: sftp.Handler
        if processes == 1:
            handler = sftp.InProcess(await sftp.server_options())
        else:  # accepted here, served by worker processes (intake/sftp_workers.py)
            handler = sftp_workers.Workers(processes)
            await handler.start()
        acceptor = sftp.Listener(sock, handler)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        self.stdout.write("\n".join([*lines, "Ready."]))
        self.stdout.flush()
        await done.wait()
        acceptor.close()  # no new connection; then the others get the grace to end
        stopping()
        await acceptor.wait_closed()
        await acceptor.drain(settings.SHUTDOWN_SECONDS)
