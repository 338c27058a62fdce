"""The SFTP front end in several processes (ROSTERDROP_SFTP_PROCESSES > 1): one acceptor and
worker processes, as OpenSSH's listener forks a process per connection.

asyncssh runs a connection's cipher, packets and SFTP requests in one Python thread, and one
process's connections share that thread's core at most (bench/README.md, "Uploads"). The
acceptor (`serve`'s sftp.Listener) reads a load balancer's PROXY header, closes a banned
address and counts the connection caps for the whole port (sftp.Slots), then hands the socket
to the worker serving the fewest connections (SCM_RIGHTS over a Unix socket pair); the worker
serves it to its end and then tells the acceptor, which gives the slot back.

Everything else the processes share lives where each of them reads it: the defender's scores
and bans, the host keys, the logins, quotas and uploads in the database, the bytes in the data
folder or the bucket. On SQLite the import worker is a thread of the acceptor's process: an
upload a worker stored wakes it through the same socket pair (on PostgreSQL the upload's job
is in the database's queue already). A worker that dies gives its slots back and another is
started; a worker whose acceptor is gone (its end of the pair closes) takes no new connection,
gives the ones it has ROSTERDROP_SHUTDOWN_SECONDS to end, and exits.
"""

import asyncio
import contextlib
import functools
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from rosterdrop.inbox.signals import upload_waiting
from rosterdrop.intake import sftp, worker

log = logging.getLogger(__name__)

# A worker process: Django set up first (this module imports the models), then work(FD).
_WORKER = (
    "import django; django.setup(); from rosterdrop.intake import sftp_workers as w; w.work({fd})"
)
READY_SECONDS = 120  # a worker's start (Django, the host keys) on a loaded machine
STOP_MARGIN_SECONDS = 10  # after the grace: the workers' own disconnects and exits


@dataclass(eq=False)
class _Worker:
    """One worker process as the acceptor knows it: its socket pair and the slots its
    connections hold (a connection's id -> its release)."""

    proc: subprocess.Popen
    channel: socket.socket
    ready: asyncio.Future[None]
    tickets: dict[int, Callable[[], None]] = field(default_factory=dict)


class Workers:
    """The acceptor's side (sftp.Handler): starts the worker processes, hands them sockets."""

    def __init__(self, count: int):
        self.count = count
        self.workers: list[_Worker] = []
        self.handed = 0
        self.stopping = False

    async def start(self) -> None:
        """Start the workers; return once each of them serves."""
        self.workers = [self._spawn() for _ in range(self.count)]
        await asyncio.wait_for(asyncio.gather(*(w.ready for w in self.workers)), READY_SECONDS)

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            fd = theirs.fileno()
            # -P: not the working folder first on the import path, as `-c` would put it.
            command = [sys.executable, "-P", "-c", _WORKER.format(fd=fd)]
            proc = subprocess.Popen(command, pass_fds=[fd])
        loop = asyncio.get_running_loop()
        spawned = _Worker(proc, ours, loop.create_future())
        loop.add_reader(ours, self._heard, spawned)
        return spawned

    def _heard(self, spawned: _Worker) -> None:
        try:
            message = spawned.channel.recv(64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        kind, _, arg = message.partition(b" ")
        if kind == b"closed":
            spawned.tickets.pop(int(arg))()
        elif kind == b"wake":
            worker.wake(int(arg) if arg else None)
        elif kind == b"ready":
            spawned.ready.set_result(None)
        elif not message:  # the process ended
            self._lost(spawned)

    def _lost(self, spawned: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(spawned.channel)
        spawned.channel.close()
        for release in spawned.tickets.values():
            release()
        spawned.tickets.clear()
        self.workers.remove(spawned)
        if not spawned.ready.done():
            spawned.ready.set_exception(RuntimeError("an SFTP worker process did not start"))
        # Reaped in a thread: it exits as its socket pair closes, or soon after.
        asyncio.get_running_loop().create_task(asyncio.to_thread(spawned.proc.wait))
        if not self.stopping:
            log.error("sftp worker process %d ended: starting another", spawned.proc.pid)
            self.workers.append(self._spawn())

    async def hand(
        self,
        sock: socket.socket,
        ip: str | None,
        refusal: sftp.Refusal | None,
        release: Callable[[], None],
    ) -> None:
        with sock:  # the worker holds its own copy once sent
            serving = [w for w in self.workers if w.ready.done() and not w.ready.exception()]
            if not serving:  # all of them (re)starting: wait for the first
                starting = [w.ready for w in self.workers]
                await asyncio.wait(starting, return_when=asyncio.FIRST_COMPLETED)
                serving = [w for w in self.workers if w.ready.done() and not w.ready.exception()]
            if not serving:
                release()
                log.error("sftp connection from %s closed: no SFTP worker process serves", ip)
                return
            chosen = min(serving, key=lambda w: len(w.tickets))
            self.handed += 1
            ticket = {
                "id": self.handed,
                "ip": ip,
                "refusal": refusal.reason if refusal else None,
                "scored": refusal.scored if refusal else False,
            }
            try:
                socket.send_fds(
                    chosen.channel,
                    [json.dumps(ticket).encode()],
                    [sock.fileno()],
                    socket.MSG_DONTWAIT,
                )
            except OSError as exc:  # the worker is gone, or too far behind to take it
                release()
                log.warning("sftp connection from %s closed: not handed over (%s)", ip, exc)
                return
            chosen.tickets[self.handed] = release

    async def drain(self, grace: float) -> None:
        """Stop the workers: each gives its connections `grace` seconds to end, then closes
        the rest and exits (killed if it has not after a margin)."""
        self.stopping = True
        procs = [w.proc for w in self.workers]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(_wait_all, procs, grace + STOP_MARGIN_SECONDS)


def _wait_all(procs: list[subprocess.Popen], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("sftp worker process %d did not stop: killed", proc.pid)
            proc.kill()
            proc.wait()


# -- a worker process -----------------------------------------------------------------------


def work(fd: int) -> None:
    """A worker process's life: serve the connections the acceptor hands over on the socket
    pair `fd` until told to stop (SIGTERM, SIGINT) or the acceptor is gone."""
    channel = socket.socket(fileno=fd)
    asyncio.run(_work(channel))


async def _work(channel: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    options = await sftp.server_options()
    done = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    serving: set[asyncio.Task] = set()

    def tell(message: bytes) -> None:
        with contextlib.suppress(OSError):  # the acceptor is gone: nobody to tell
            channel.send(message)

    def heard() -> None:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 4096, 1, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            message, fds = b"", []
        if not message or not fds:  # the acceptor is gone
            loop.remove_reader(channel)
            done.set()
            return
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        handed = json.loads(message)
        refused = handed["refusal"]
        refusal = sftp.Refusal(refused, handed["scored"]) if refused else None
        closed = functools.partial(tell, f"closed {handed['id']}".encode())
        task = loop.create_task(
            sftp.serve(sock, options, sftp.Ticket(handed["ip"], refusal, closed))
        )
        serving.add(task)
        task.add_done_callback(serving.discard)

    if not settings.JOB_QUEUE:  # SQLite: the import worker is a thread of the acceptor's
        upload_waiting.connect(
            lambda upload, **_: tell(f"wake {upload.district_id}".encode()), weak=False
        )
    loop.add_reader(channel, heard)
    tell(b"ready")
    await done.wait()
    loop.remove_reader(channel)
    await sftp.drain(settings.SHUTDOWN_SECONDS)
