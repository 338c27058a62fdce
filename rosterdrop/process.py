"""Which process runs what: this process's name, whether another's is still alive, and the
names of the temporary files each process makes (so that those of a dead one can be found).

A sync left `running`, or a temporary file, belongs to a process; after a crash it must be
recovered, but a second live process (a web process beside a worker, `rosterdrop import`
beside `rosterdrop serve`) must never be mistaken for a dead one. A process is named by host,
pid and the kernel's start time of that pid: a pid reused by a new process has another start
time, so the name of a dead process never comes back to life.
"""

import functools
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def _start_time(pid: int | str) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its last ")".
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


@dataclass(frozen=True)
class Runner:
    host: str
    pid: int
    started: int

    def __str__(self) -> str:
        return f"p{self.pid}s{self.started}h{self.host}"

    @property
    def alive(self) -> bool:
        """Whether this process still runs. One on another host is taken as alive: only a
        process on this host can be checked (a sync's heartbeat tells more: states.is_dead)."""
        if self.host != me().host:
            return True
        return _start_time(self.pid) == self.started


_NAME = re.compile(r"p(\d+)s(\d+)h([A-Za-z0-9]+)~")


def parse(text: str) -> Runner | None:
    """The process named in a runner field or a temporary file name, if any."""
    found = _NAME.search(text + "~")
    if found is None:
        return None
    return Runner(found[3], int(found[1]), int(found[2]))


@functools.cache
def _me(pid: int) -> Runner:
    return Runner(_host(), pid, _start_time("self") or 0)


def me() -> Runner:
    """This process (a forked child is another process: the pid is part of the key)."""
    return _me(os.getpid())


def mkdtemp(prefix: str, folder: Path) -> Path:
    """A temporary folder named after this process (`spill-p12s34hhost~abcd`)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{me()}~", dir=folder))


def mkstemp(prefix: str, folder: Path, suffix: str = "") -> tuple[int, str]:
    """A temporary file named after this process."""
    return tempfile.mkstemp(prefix=f"{prefix}{me()}~", suffix=suffix, dir=folder)


def left_by_dead(name: str) -> bool:
    """Whether a temporary file or folder was made by a process that is gone."""
    runner = parse(name)
    return runner is not None and not runner.alive


def checkpoint(name: str) -> None:
    """A point where tests make the process stop, to kill it at a known moment.

    With ROSTERDROP_PAUSE_AT=name, the process writes its pid to ROSTERDROP_PAUSE_FILE and
    waits there until that file is removed. Unset (always, outside tests), it does nothing.
    """
    if os.environ.get("ROSTERDROP_PAUSE_AT") != name:
        return
    flag = Path(os.environ["ROSTERDROP_PAUSE_FILE"])
    flag.write_text(str(os.getpid()))
    while flag.exists():
        time.sleep(0.01)
