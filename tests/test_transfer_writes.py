"""A transfer's writes, made a batch at a time by the writer thread and hashed by the hasher
thread beside it: the file kept holds the bytes sent, in the order sent, under their sha256; a
write the disk refuses fails the transfer, and nothing is kept."""

import hashlib
import os
import random
import resource
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.inbox.store import stored_file
from rosterdrop.intake import folder, transfer
from rosterdrop.intake.transfer import Transfer

pytestmark = pytest.mark.django_db

# (where, as a fraction of what arrived so far, or None for the end; how many bytes)
WRITES = st.lists(
    st.tuples(st.none() | st.floats(0, 1), st.integers(1, 5000)), min_size=1, max_size=40
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=WRITES, seed=st.integers(0, 255))
def test_the_file_kept_is_the_bytes_written_under_their_sha256(district, monkeypatch, writes, seed):
    """Writes at the end (batched), rewrites before it, rewrites that run past it, in any
    order: the upload holds what a plain file written the same way holds."""
    monkeypatch.setattr(transfer, "WRITE_BATCH", 4096)
    monkeypatch.setattr(transfer, "MAX_QUEUED", 2)
    folder.open_root(district.slug)
    upload = Transfer(district, "users.csv", "sftp", "springfield", None)
    expected = bytearray()
    for n, (where, size) in enumerate(writes):
        offset = len(expected) if where is None else int(where * len(expected))
        data = bytes((seed + n + i) % 256 for i in range(size))
        upload.write_at(offset, data)
        expected[offset : offset + size] = data
        if n % 7 == 6:  # a client reading back what it wrote sees it
            assert upload.read_at(0, len(expected)) == expected
    kept = upload.finish(clean=True)
    assert kept is not None and kept.size == len(expected)
    assert stored_file(kept).read_bytes() == expected
    assert kept.sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("iov_max", [1, 5, 1024])
def test_a_write_s_pieces_are_kept_in_order_however_many(district, monkeypatch, iov_max):
    """An SFTP write's pieces (bytes and views, as they arrived) go to the file unjoined, one
    pwritev per IOV_MAX of them, each short write continued, and to the hasher joined: the
    file and its sha256 are those of the bytes in order, with fewer pieces than IOV_MAX in a
    batch or many more."""
    monkeypatch.setattr(transfer, "WRITE_BATCH", 4096)
    monkeypatch.setattr(transfer, "IOV_MAX", iov_max)
    pwritev = os.pwritev

    def short(fd, buffers, offset):  # the kernel may write less than asked: half the first
        first = memoryview(buffers[0])
        return pwritev(fd, [first[: max(1, len(first) // 2)]], offset)

    monkeypatch.setattr(os, "pwritev", short)
    folder.open_root(district.slug)
    upload = Transfer(district, "users.csv", "sftp", "springfield", None)
    rng = random.Random(iov_max)
    expected = bytearray()
    for _ in range(40):
        parts = [rng.randbytes(rng.randint(1, 700)) for _ in range(rng.randint(1, 30))]
        parts = [memoryview(p)[1:] if len(p) > 1 and rng.random() < 0.5 else p for p in parts]
        size = sum(len(p) for p in parts)
        assert upload.write_parts(len(expected), parts, size) == size
        expected += b"".join(parts)
    kept = upload.finish(clean=True)
    assert kept is not None and kept.size == len(expected)
    assert stored_file(kept).read_bytes() == expected
    assert kept.sha256 == hashlib.sha256(expected).hexdigest()


def test_a_write_the_disk_refuses_fails_the_transfer(district, monkeypatch):
    """The file may not grow past 100 kB (RLIMIT_FSIZE: a short write, then EFBIG, as a full
    disk would answer): the writer thread's failure refuses what follows (a stat, a write, the
    close), and nothing is kept."""
    monkeypatch.setattr(transfer, "WRITE_BATCH", 1 << 16)
    folder.open_root(district.slug)
    upload = Transfer(district, "users.csv", "sftp", "springfield", None)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))
        for n in range(4):  # answered before the writer thread gets to them
            upload.write_at(n * 50_000, b"x" * 50_000)
        with pytest.raises(OSError, match="Could not store the file"):
            upload.stat()  # waits for the writer thread
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    with pytest.raises(OSError, match="Could not store the file"):
        upload.write_at(200_000, b"x")
    with pytest.raises(OSError, match="the file was not kept"):
        upload.finish(clean=True)
    assert not district.uploads.exists()
    assert (
        not upload.path.exists()
        and not (folder.district_root(district.slug) / "users.csv").exists()
    )
