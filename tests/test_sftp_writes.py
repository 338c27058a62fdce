"""An upload's write requests taken where they arrive (sftp._Session._take_writes) against a
real `rosterdrop serve`: whatever the cuts between the client's SSH data messages, the writes
land where they say, every request is answered in the order sent, anything that is not a
well-formed write to a file open for upload is asyncssh's to answer, and a cut upload is never
kept. The SFTP messages are written by hand (asyncssh's client sends each `write` of a channel
as data messages of its own)."""

import asyncio
import hashlib
import itertools
import random
import time

import asyncssh
import pytest
from asyncssh.packet import Byte, String, UInt32, UInt64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

FXP_INIT, FXP_OPEN, FXP_CLOSE, FXP_WRITE, FXP_FSTAT = 1, 3, 4, 6, 8
FXP_STATUS, FXP_HANDLE, FXP_ATTRS = 101, 102, 105
FX_OK, FX_PERMISSION_DENIED, FX_BAD_MESSAGE = 0, 3, 5
UPLOAD = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC


def request(kind: int, ident: int, *fields: bytes) -> bytes:
    payload = Byte(kind) + UInt32(ident) + b"".join(fields)
    return UInt32(len(payload)) + payload


def write(ident: int, handle: bytes, offset: int, data: bytes, extra: bytes = b"") -> bytes:
    return request(FXP_WRITE, ident, String(handle), UInt64(offset), String(data), extra)


class Client(asyncssh.SSHClientSession):
    """The client end of an SFTP channel: replies parsed as they arrive."""

    def __init__(self) -> None:
        self.buffer = b""
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.buffer += data
        self.arrived.set()

    async def replies(self, count: int) -> list[tuple[int, int, bytes]]:
        """The next `count` replies: (type, request ID, the rest)."""
        replies: list[tuple[int, int, bytes]] = []
        while len(replies) < count:
            if len(self.buffer) >= 4 and len(self.buffer) >= 4 + (
                size := int.from_bytes(self.buffer[:4], "big")
            ):
                reply = self.buffer[4 : 4 + size]
                replies.append((reply[0], int.from_bytes(reply[1:5], "big"), reply[5:]))
                self.buffer = self.buffer[4 + size :]
                continue
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 30)
        return replies


async def start(conn: asyncssh.SSHClientConnection) -> tuple[asyncssh.SSHClientChannel, Client]:
    chan, client = await conn.create_session(Client, subsystem="sftp", encoding=None)
    chan.write(UInt32(5) + Byte(FXP_INIT) + UInt32(3))
    await client.replies(1)
    return chan, client


async def open_upload(chan, client: Client, name: str, ident: int = 1) -> bytes:
    chan.write(request(FXP_OPEN, ident, String(name), UInt32(UPLOAD), UInt32(0)))
    [(kind, got, rest)] = await client.replies(1)
    assert (kind, got) == (FXP_HANDLE, ident), rest
    return rest[4:]


def status(rest: bytes) -> int:
    return int.from_bytes(rest[:4], "big")


def send_cut(chan, stream: bytes, cuts: list[int]) -> None:
    """`stream` in data messages cut at `cuts` (positions anywhere in it)."""
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for begin, end in zip(bounds, bounds[1:], strict=False):
        if end > begin:
            chan.write(stream[begin:end])


def kept(server, name: str) -> tuple[bytes, str]:
    """The upload kept under `name`: its bytes in the district's folder, its sha256."""
    [row] = server.query("select sha256 from inbox_upload where filename = ?", name)
    return (server.root() / name).read_bytes(), row["sha256"]


EXAMPLES = itertools.count()  # a file name of its own for each
# A request among the writes: a write (where: a fraction of what arrived so far, None for the
# end; how many bytes), a stat of the file, or a request that is not a write taken in place.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.none() | st.floats(0, 1), st.integers(0, 70_000)),
        st.tuples(st.just("write"), st.none(), st.integers(1, 300)),
        st.tuples(st.sampled_from(["fstat", "bad handle", "short handle", "trailing byte"])),
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS, cuts=st.lists(st.integers(0, 1 << 20), max_size=30), seed=st.integers(0, 1000))
def test_writes_cut_anywhere_land_where_they_say(server, ops, cuts, seed):
    """Writes at the end and before it (at any offset, odd or not), among a stat and malformed
    or misdirected writes, sent at once in data messages cut anywhere (within a request's
    length, its header, its data): each request answered in order as asyncssh answers it, and
    the file kept is what a plain file written the same way holds, under its sha256."""
    rng = random.Random(seed)
    name = f"w{next(EXAMPLES)}.bin"

    async def go() -> list[tuple[int, int, bytes]]:
        async with server.connect() as conn:
            chan, client = await start(conn)
            handle = await open_upload(chan, client, name)
            stream, wanted = b"", []
            expected = bytearray()
            for n, op in enumerate(ops, start=2):
                if op[0] == "write":
                    where, size = op[1], op[2]
                    offset = len(expected) if where is None else int(where * len(expected))
                    data = rng.randbytes(size)
                    expected[offset : offset + size] = data
                    stream += write(n, handle, offset, data)
                    wanted.append((n, FXP_STATUS, FX_OK))
                elif op[0] == "fstat":
                    stream += request(FXP_FSTAT, n, String(handle))
                    wanted.append((n, FXP_ATTRS, len(expected)))
                elif op[0] == "bad handle":  # no such handle: asyncssh's invalid handle
                    stream += write(n, bytes([handle[0] ^ 0x55]) + handle[1:], 0, b"x" * 100)
                    wanted.append((n, FXP_STATUS, None))
                elif op[0] == "short handle":
                    stream += write(n, handle[:3], 0, b"x" * 100)
                    wanted.append((n, FXP_STATUS, None))
                else:  # more than a write holds: asyncssh's bad message, nothing written
                    stream += write(n, handle, 0, b"x" * 100, extra=b"!")
                    wanted.append((n, FXP_STATUS, FX_BAD_MESSAGE))
            send_cut(chan, stream, cuts)
            replies = await client.replies(len(wanted))
            for (ident, kind, value), (got_kind, got_ident, rest) in zip(
                wanted, replies, strict=True
            ):
                assert (got_ident, got_kind) == (ident, kind), rest
                if kind == FXP_ATTRS:
                    assert int.from_bytes(rest[4:12], "big") == value  # flags, then the size
                elif value is None:
                    assert status(rest) not in (FX_OK, FX_BAD_MESSAGE), rest
                else:
                    assert status(rest) == value, rest
            chan.write(request(FXP_CLOSE, 999, String(handle)))
            [(kind, ident, rest)] = await client.replies(1)
            assert (kind, ident, status(rest)) == (FXP_STATUS, 999, FX_OK), rest
            chan.close()
            return bytes(expected)

    expected = asyncio.run(go())
    assert kept(server, name) == (expected, hashlib.sha256(expected).hexdigest())


def test_a_write_after_the_close_in_the_same_message_is_refused(server):
    """A close and a write to the same handle sent together: the close is asyncssh's (it waits
    for the upload to be stored), and the write after it is not taken before it: refused as
    a write to a closed handle, nothing of it in the file kept."""
    first, late = random.randbytes(50_000), random.randbytes(50_000)

    async def go():
        async with server.connect() as conn:
            chan, client = await start(conn)
            handle = await open_upload(chan, client, "late.bin")
            chan.write(write(2, handle, 0, first))
            [(_, _, rest)] = await client.replies(1)
            assert status(rest) == FX_OK
            chan.write(
                request(FXP_CLOSE, 3, String(handle))
                + write(4, handle, len(first), late)
                + write(5, handle, 0, late)
            )
            replies = await client.replies(3)
            assert [(kind, ident) for kind, ident, _ in replies] == [
                (FXP_STATUS, n) for n in (3, 4, 5)
            ]
            assert [status(rest) == FX_OK for _, _, rest in replies] == [True, False, False]
            chan.close()

    asyncio.run(go())
    assert kept(server, "late.bin") == (first, hashlib.sha256(first).hexdigest())


def test_writes_to_two_uploads_interleaved(server):
    """Two files open for upload at once, their writes interleaved in one message stream:
    each file gets its own."""
    one, two = random.randbytes(300_000), random.randbytes(300_000)

    async def go():
        async with server.connect() as conn:
            chan, client = await start(conn)
            first = await open_upload(chan, client, "one.bin", 1)
            second = await open_upload(chan, client, "two.bin", 2)
            stream, n = b"", 10
            for offset in range(0, 300_000, 30_000):
                stream += write(n, first, offset, one[offset : offset + 30_000])
                stream += write(n + 1, second, offset, two[offset : offset + 30_000])
                n += 2
            send_cut(chan, stream, [random.randrange(len(stream)) for _ in range(20)])
            replies = await client.replies(20)
            assert [ident for _, ident, _ in replies] == list(range(10, 30))
            assert [status(rest) for _, _, rest in replies] == [FX_OK] * 20
            chan.write(
                request(FXP_CLOSE, 40, String(first)) + request(FXP_CLOSE, 41, String(second))
            )
            assert [status(rest) for _, _, rest in await client.replies(2)] == [FX_OK] * 2
            chan.close()

    asyncio.run(go())
    assert kept(server, "one.bin")[0] == one and kept(server, "two.bin")[0] == two


def test_a_write_past_the_end_fails_the_upload(server):
    """Writes out of order (one past the end of what arrived): refused, and so is every write
    after it and the close; nothing is kept."""
    data = random.randbytes(100_000)

    async def go():
        async with server.connect() as conn:
            chan, client = await start(conn)
            handle = await open_upload(chan, client, "gap.bin")
            chan.write(
                write(2, handle, 0, data[:40_000])
                + write(3, handle, 60_001, data[60_001:])
                + write(4, handle, 40_000, data[40_000:60_001])
            )
            replies = await client.replies(3)
            assert [status(rest) == FX_OK for _, _, rest in replies] == [True, False, False]
            assert b"past the end" in replies[1][2]
            chan.write(request(FXP_CLOSE, 5, String(handle)))
            [(_, _, rest)] = await client.replies(1)
            assert status(rest) != FX_OK and b"not kept" in rest
            chan.close()

    asyncio.run(go())
    assert server.query("select * from inbox_upload") == []
    assert not (server.root() / "gap.bin").exists()


@pytest.mark.parametrize(
    "cut", [0, 3, 4, 20, 28, 29, 10_000, 70_028, 70_029], ids=lambda c: f"at{c}"
)
@pytest.mark.parametrize("end", ["eof", "disconnect"])
def test_an_upload_cut_within_a_write_is_not_kept(server, cut, end):
    """The client's end of file, or its connection lost, within a write request (in its
    length, its header, its data, or just after it), the file still open: no upload, nothing
    left of its bytes."""
    data = random.randbytes(70_000)

    async def go():
        async with server.connect() as conn:
            chan, client = await start(conn)
            handle = await open_upload(chan, client, "users.csv")
            chan.write(write(2, handle, 0, data[:1000]))
            await client.replies(1)
            chan.write(write(3, handle, 1000, data)[:cut])
            await asyncio.sleep(0.2)
            if end == "eof":
                chan.write_eof()
                await chan.wait_closed()
            else:
                conn.abort()

    asyncio.run(go())
    [aborted] = server.wait_for(lambda: server.audit("upload_aborted"), 10, "the abort record")
    assert ("end of file" if end == "eof" else "connection") in aborted["detail"]
    time.sleep(0.5)
    assert server.query("select * from inbox_upload") == []
    assert not (server.root() / "users.csv").exists()
    assert list((server.data_dir / "sftp-tmp" / "alpha").iterdir()) == []


def test_a_write_to_a_file_open_for_reading_is_refused(server):
    """A handle of a download is not an upload's: the write goes to asyncssh's server, which
    refuses it (permission denied); the file is as uploaded."""
    data = random.randbytes(40_000)

    async def go():
        async with server.connect() as conn:
            chan, client = await start(conn)
            handle = await open_upload(chan, client, "read.bin")
            chan.write(write(2, handle, 0, data) + request(FXP_CLOSE, 3, String(handle)))
            assert [status(rest) for _, _, rest in await client.replies(2)] == [FX_OK] * 2
            read = asyncssh.FXF_READ
            chan.write(request(FXP_OPEN, 4, String("read.bin"), UInt32(read), UInt32(0)))
            [(kind, _, rest)] = await client.replies(1)
            assert kind == FXP_HANDLE
            reading = rest[4:]
            chan.write(write(5, reading, 0, b"x" * 1000) + request(FXP_CLOSE, 6, String(reading)))
            [(_, five, refused), (_, six, closed)] = await client.replies(2)
            assert (five, six) == (5, 6)
            assert status(refused) == FX_PERMISSION_DENIED and b"open for reading" in refused
            assert status(closed) == FX_OK
            chan.close()

    asyncio.run(go())
    assert kept(server, "read.bin") == (data, hashlib.sha256(data).hexdigest())
