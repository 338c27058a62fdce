"""Produce the items of an iterator in a thread, a few ahead of the one who uses them.

Reading a batch and preparing records to write are mostly numpy, polars, Arrow and SQLite in
C, which let go of the GIL: the next item is made on the second core while this one is used.
"""

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


def ahead(items: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """Produce `items` in a thread, up to `depth` ahead of the consumer.

    Exceptions reach the consumer as raised; closing the generator stops the thread before
    whatever it reads from is closed.
    """
    ready: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                ready.put((item, error), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over(item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            hand_over(_END, error)
            return
        hand_over(_END)

    thread = threading.Thread(target=produce, name="rosterdrop-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
