"""Giving freed memory back to the system between the stages of a large import.

numpy and Python allocate through the C library's malloc, which keeps freed memory in its
heap for reuse. After the files are read and checked, hundreds of MB of batches are free but
still resident when the roster's snapshot is read for the plan: the import's memory peak.
"""

import ctypes

# The symbols the interpreter is linked with: glibc's malloc_trim, where the C library is glibc.
_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def release() -> None:
    """Return the C heap's free memory to the system (a no-op without glibc).

    Measured after reading 5.8M rows: about 100 MB, in a few milliseconds.
    """
    if _TRIM is not None:
        _TRIM(0)
