"""Giving freed memory back to the system between the stages of a large import, and keeping
the C library's malloc from holding on to it in the first place.

numpy, Python's large objects and Arrow (its system pool, ingest/apps.py) allocate through the
C library's malloc, which keeps freed memory in its heaps for reuse. After the files are read
and checked, hundreds of MB of batches are free but still resident when the roster's snapshot
is read for the plan.
"""

import ctypes

# The symbols the interpreter is linked with: glibc's malloc_trim and mallopt, where the C
# library is glibc.
_LIBC = ctypes.CDLL(None)
_TRIM = getattr(_LIBC, "malloc_trim", None)
_MALLOPT = getattr(_LIBC, "mallopt", None)
# mallopt's parameter for the most arenas (heaps) malloc makes for a process's threads.
M_ARENA_MAX = -8


def release() -> None:
    """Return the C heap's free memory to the system (a no-op without glibc).

    Measured after reading 5.8M rows: about 100 MB, in a few milliseconds.
    """
    if _TRIM is not None:
        _TRIM(0)


def one_arena() -> None:
    """Have every thread allocate from the C library's one main heap (a no-op without glibc);
    to be called before threads start, as an arena is a thread's from its first allocation.

    glibc gives threads heaps of their own. The read-ahead thread (ingest/ahead.py) makes
    and frees a file's 16 MB pieces in its heap, which gives little back: in the 1% change at
    `huge` 200-300 MB were free there but resident at the read's memory peak, more or less
    from run to run. In one heap shared with the main thread, the same blocks are reused and
    its free top given back. Threads take its lock only for blocks their own cache does not
    hold; measured, the import's CPU seconds did not move (bench/README.md).
    """
    if _MALLOPT is not None:
        _MALLOPT(M_ARENA_MAX, 1)
