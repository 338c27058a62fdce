"""A first import's COPY data is sent by a thread of its own (roster/store.py `_Sending`, a
psycopg Writer over its public LibpqWriter): the copying thread hands blocks over without
waiting for the server, but never more than COPY_BLOCKS of them (the import's peak memory at
`huge`: psycopg's own QueuedLibpqWriter queues up to 1024 blocks, ~128 MB). No database: the
writer under it is a stand-in, on either engine."""

import threading
import time

import pytest

from rosterdrop.roster import store


class Held:
    """A writer that takes each block only once let go (`go`), as a server behind would."""

    def __init__(self, fail: BaseException | None = None):
        self.go = threading.Event()
        self.blocks: list[bytes] = []
        self.finished: list[BaseException | None] = []
        self.fail = fail

    def write(self, data) -> None:
        self.go.wait()
        if self.fail is not None:
            raise self.fail
        self.blocks.append(bytes(data))

    def finish(self, exc: BaseException | None = None) -> None:
        self.finished.append(exc)


def written(sending: store._Sending, blocks: list[bytes]) -> tuple[threading.Thread, list[int]]:
    """A thread writing `blocks` one by one, and how many of them its writes returned from."""
    done: list[int] = []

    def run() -> None:
        for block in blocks:
            sending.write(block)
            done.append(1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_at_most_its_blocks_wait_for_the_server():
    held = Held()
    sending = store._Sending(held, blocks=7)
    blocks = [bytes([i]) * store.COPY_BLOCK for i in range(20)]
    thread, done = written(sending, blocks)
    thread.join(timeout=1)
    # One block in the held writer's hands, seven queued, the writer of the ninth waiting.
    assert thread.is_alive()
    assert len(done) == 8
    assert sending.queue.qsize() == 7
    held.go.set()
    thread.join(timeout=10)
    sending.finish()
    assert held.blocks == blocks
    assert held.finished == [None]


def test_the_default_bound_is_copy_blocks_of_copy_block_bytes():
    """The figure that keeps `huge`'s first import under 1.5 GB (bench/README.md, pgfirst28):
    ~a batch of enrollments' CSV, a large write cut in blocks, none copied."""
    held = Held()
    sending = store._Sending(held)
    assert sending.queue.maxsize == store.COPY_BLOCKS == 160
    assert store.COPY_BLOCK == 128 * 1024
    data = bytes(range(256)) * (5 * store.COPY_BLOCK // 256 + 3)
    sending.write(data)
    assert sending.queue.qsize() <= 6
    held.go.set()
    sending.finish()
    assert [len(b) for b in held.blocks] == [store.COPY_BLOCK] * 5 + [768]
    assert b"".join(held.blocks) == data


def test_a_failed_send_is_raised_to_the_writer_and_the_copy_abandoned():
    failure = OSError("connection lost")
    held = Held(fail=failure)
    held.go.set()
    sending = store._Sending(held)
    sending.write(b"a" * 10)
    deadline = time.monotonic() + 10
    while sending._error is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread meets the failure
    with pytest.raises(OSError):
        sending.write(b"b" * 10)
    with pytest.raises(OSError):
        sending.finish()
    assert held.finished == [failure]  # the server is told the COPY is abandoned


def test_an_abandoned_copy_sends_nothing_more():
    held = Held()
    sending = store._Sending(held)
    for _ in range(5):
        sending.write(b"x" * 100)
    stop = RuntimeError("a file was fatal")
    threading.Timer(0.2, held.go.set).start()
    sending.finish(stop)
    assert len(held.blocks) <= 1  # only what the thread had taken before
    assert held.finished == [stop]
