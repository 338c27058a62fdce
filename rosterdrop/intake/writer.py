"""The front ends' writes to the database, in one thread of their own.

On SQLite an import holds the one write lock from its apply to its commit, a minute or more for
a large district, and a write waits for it (settings: SQLITE_WRITE_WAIT_SECONDS). Made from the
thread that also reads (SFTP's database thread: who is this login, is this address banned) or
that accepts connections (FTPS), such a write would hold every other district's connection up
behind that import, before its banner. So the writes queue here, one after another, as SQLite
takes them anyway, and the reads and the accepting go on.
"""

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database-writes")


def later(fn: Callable[..., object], *args: object) -> None:
    """fn(*args) in the writing thread, not waited for: an audit row of a connection refused
    where it was accepted. An error is logged, as the caller has gone on."""
    THREAD.submit(fn, *args).add_done_callback(_logged)


def _logged(done: Future[object]) -> None:
    if (exc := done.exception()) is not None:
        log.error("a front end's write failed", exc_info=exc)
