"""The SFTP front end: each district login sees one flat folder; complete uploads go to the inbox.

asyncssh handles the protocol. What it leaves to the application (docs/reference/stack.md
section 1) is here:
path confinement with no links, uploads kept only on the client's own close (the Transfer of
transfer.py; end of file or a disconnect with a file open aborts it), WinSCP-style
temp-then-rename, the auth limits and defender (a banned address is closed before the SSH
version), caps on connections, sessions and open handles, and an idle timeout.
"""

import asyncio
import contextlib
import functools
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import asyncssh
from asgiref.sync import sync_to_async
from asyncssh.packet import UInt32
from asyncssh.sftp import (
    FX_OK,
    FXP_STATUS,
    FXP_WRITE,
    MAX_SFTP_PACKET_LEN,
    MIN_SFTP_VERSION,
    SFTPServerHandler,
)
from asyncssh.stream import SSHServerStreamSession
from django.conf import settings

from rosterdrop.intake import asyncssh_patches, auth, defender, folder, proxy_protocol, writer
from rosterdrop.intake.models import Login
from rosterdrop.intake.transfer import Transfer

log = logging.getLogger(__name__)

# No CBC ciphers, no SHA-1 or MD5 MACs, no SHA-1 or small-group key exchange. asyncssh always
# offers strict kex (kex-strict-s-v00@openssh.com), which closes Terrapin (CVE-2023-48795).
KEX_ALGS = [
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp521",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp256",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
]
ENCRYPTION_ALGS = [
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]
MAC_ALGS = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "umac-128@openssh.com",
]
# Replies held for one write (_Replies): a download's data goes out at this size at the latest.
REPLY_BATCH = 64 * 1024
# SSH_FXP_WRITE up to its data, as clients send it (_Session._take_writes): the length, the
# type, the request ID, the handle's length and the handle (asyncssh's are 4 bytes), the
# offset, the data's length.
WRITE_HEAD = struct.Struct(">IBIIIQI")
# SSH_FXP_STATUS with FX_OK, an empty message and language tag: asyncssh's reply to a write.
OK_STATUS = struct.Struct(">IBIIII")


@dataclass
class ConnState:
    """Per-connection facts the SFTP sessions need (set by the SSH server on connect)."""

    ip: str | None
    login: Login | None = None
    username: str = ""
    sessions: int = 0
    failures: int = 0
    method: str = ""
    active: float = field(default_factory=time.monotonic)  # when the client last sent data


def _db(fn):
    """A read, in the one database thread every connection shares."""
    return sync_to_async(fn, thread_sensitive=True)


def _db_write(fn):
    """A write, in the writing thread (writer.py): it may wait for an import's commit, and
    the reads in `_db`'s thread must not wait with it."""
    return sync_to_async(fn, thread_sensitive=False, executor=writer.THREAD)


async def _refused_as_banned(username: str, ip: str | None) -> bool:
    """auth.refuse_banned, its read in `_db`'s thread and its audit row in the writing one."""
    if not await _db(defender.is_banned)(ip):
        return False
    await _db_write(auth.banned)(username, ip)
    return True


async def _in_folder(fn, *args):
    """Run a folder function: at once for the data folder (no database), else in a thread of
    its own, never queued behind the uploads being stored in the database's thread."""
    if not folder.shared():
        return fn(*args)
    return await sync_to_async(fn, thread_sensitive=False)(*args)


class RosterSFTPServer(asyncssh.SFTPServer):
    """One SFTP session of an authenticated district login."""

    def __init__(self, chan: asyncssh.SSHServerChannel, session: "_Session"):
        super().__init__(chan)  # no chroot argument: every path goes through _local()
        self.session = session
        self.state: ConnState = self.connection.get_extra_info("rosterdrop")
        self.login = self.state.login
        assert self.login is not None
        self.district = self.login.district
        self.root = folder.open_root(self.district.slug)
        self.handles = 0

    def exit(self) -> None:
        """The session ended: tell the client it went well (exit status 0), as OpenSSH's
        sftp-server does. OpenSSH's scp (SFTP underneath) otherwise exits 1."""
        self.session.replies.flush()  # what was answered goes before the channel closes
        with contextlib.suppress(OSError):  # the connection is already gone
            self.channel.exit(0)

    # -- paths ---------------------------------------------------------------------------

    def _local(self, path: bytes) -> tuple[str, Path]:
        return folder.resolve(self.root, path)

    def _may(self, permission: str) -> None:
        """Beyond uploading, what the operator gave this login (intake.models.PERMISSIONS)."""
        if not self.login.may(permission):
            raise asyncssh.SFTPPermissionDenied(f"This login may not {permission} files")

    def map_path(self, path: bytes) -> bytes:
        return os.fsencode(self._local(path)[1])

    def realpath(self, path: bytes) -> bytes:
        return b"/" + folder.virtual_name(path).encode()

    async def scandir(self, path: bytes):
        self._may("list")
        name, local = self._local(path)
        if name:
            raise asyncssh.SFTPNoSuchFile("Not a folder")
        for dot in (b".", b".."):
            yield asyncssh.SFTPName(dot, attrs=asyncssh.SFTPAttrs.from_local(os.stat(local)))
        for name, st in await _in_folder(folder.listing, self.district, local):
            attrs = asyncssh.SFTPAttrs.from_local(st)
            yield asyncssh.SFTPName(os.fsencode(name), attrs=attrs)

    async def stat(self, path: bytes) -> os.stat_result:
        name, local = self._local(path)
        if not name:
            return os.stat(local)
        found = await _in_folder(folder.lookup, self.district, self.root, name)
        if found is None:
            raise asyncssh.SFTPNoSuchFile("No such file")
        return found

    async def lstat(self, path: bytes) -> os.stat_result:
        return await self.stat(path)

    # -- files ---------------------------------------------------------------------------

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        name, local = self._local(path)
        if not name:
            raise asyncssh.SFTPPermissionDenied("Is a folder")
        if self.handles >= settings.SFTP_MAX_OPEN_HANDLES:
            raise asyncssh.SFTPFailure("Too many open files")
        exists = await _in_folder(folder.lookup, self.district, self.root, name) is not None
        if pflags & asyncssh.FXF_WRITE:
            if pflags & asyncssh.FXF_EXCL and exists:
                raise asyncssh.SFTPFileAlreadyExists("File already exists")
            if not exists and not pflags & asyncssh.FXF_CREAT:
                raise asyncssh.SFTPNoSuchFile("No such file")
            # Without truncation (a resume such as `reput`, or an append) the transfer starts
            # from the file's current content.
            resume = exists and not pflags & asyncssh.FXF_TRUNC
            try:
                upload = await _db(Transfer)(
                    self.district,
                    name,
                    "sftp",
                    self.login.name,
                    self.state.ip,
                    append=bool(pflags & asyncssh.FXF_APPEND),
                )
                if resume:  # a copy of up to the size cap: in a thread of its own
                    await asyncio.to_thread(upload.resume)
            except OSError as exc:
                raise asyncssh.SFTPFailure(exc.strerror or str(exc)) from None
            self.handles += 1
            return upload
        self._may("download")
        if not exists:
            raise asyncssh.SFTPNoSuchFile("No such file")
        # From shared storage, a copy: in a thread of its own.
        opened = await asyncio.to_thread(folder.open_file, self.district, self.root, name)
        self.handles += 1
        return opened

    def read(self, file_obj: object, offset: int, size: int) -> bytes | Awaitable[bytes]:
        if isinstance(file_obj, Transfer):
            return file_obj.read_at(offset, size)
        return super().read(file_obj, offset, size)

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, Transfer):
            raise asyncssh.SFTPPermissionDenied("File is open for reading")
        return self.write_parts(file_obj, offset, (data,), len(data))

    def write_parts(
        self, upload: Transfer, offset: int, parts: Sequence[bytes | memoryview], size: int
    ) -> int:
        """write() for a write request's data as it arrived (_Session._take_writes)."""
        try:
            return upload.write_parts(offset, parts, size)
        except OSError as exc:
            raise asyncssh.SFTPFailure(exc.strerror or str(exc)) from None

    def fstat(
        self, file_obj: object
    ) -> os.stat_result | asyncssh.SFTPAttrs | Awaitable[os.stat_result | asyncssh.SFTPAttrs]:
        if isinstance(file_obj, Transfer):
            return file_obj.stat()
        return super().fstat(file_obj)

    def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, Transfer):
            file_obj.fsync()

    async def close(self, file_obj: object) -> None:
        self.handles -= 1
        if not isinstance(file_obj, Transfer):
            cast(BinaryIO, file_obj).close()
            return
        # asyncssh calls close() for the client's SSH_FXP_CLOSE and also, when the session
        # ends, for every file still open: only the first completes an upload.
        ended = self.session.ended or (
            "connection closing before the file was closed" if self.channel.is_closing() else ""
        )
        if self.session.in_request:  # a length read, its request refused unread (too long)
            ended = ended or "the client sent a malformed request"
        try:
            if not ended and not file_obj.failed:
                # The bytes go to the disk here, beside the other uploads, not in the one
                # database thread that finish() runs in one upload after another (its own
                # fsync then has nothing left to write, or meets the error again and says so).
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(file_obj.fsync)
            await _db_write(file_obj.finish)(not ended, ended)
        except OSError as exc:
            raise asyncssh.SFTPFailure(exc.strerror or str(exc)) from None

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        """Ignored (SFTPGo setstat_mode 1): `put -p` must not fail an upload."""
        self._local(path)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._local(path)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        return None

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, overwrite=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, overwrite=True)

    async def _rename(self, oldpath: bytes, newpath: bytes, overwrite: bool) -> None:
        old, old_local = self._local(oldpath)
        new, new_local = self._local(newpath)
        if not old or not new:
            raise asyncssh.SFTPPermissionDenied("Folders cannot be renamed")
        await _db_write(folder.rename)(
            self.district, old_local, new_local, overwrite, "sftp", self.login.name, self.state.ip
        )

    async def remove(self, path: bytes) -> None:
        self._may("delete")
        name, _ = self._local(path)
        if not name:
            raise asyncssh.SFTPPermissionDenied("Is a folder")
        await _in_folder(
            folder.remove, self.district, self.root, name, self.login.name, self.state.ip
        )

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPPermissionDenied("Folders cannot be created here")

    def rmdir(self, path: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Folders cannot be removed here")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")


class _Replies(asyncssh.SSHWriter):
    """An SFTP session's output, its replies written together.

    asyncssh's SFTP server answers each request with a write of its own: an SSH packet, its
    encryption and a `send` each, with an SSH_MSG_IGNORE packet before it. An upload is one
    write request per 32 KiB, and all the requests that arrived together are answered before
    the server waits for more: their replies are held until then (the end of the socket read
    that brought them, `asyncssh_patches.at_read_end`, where they go out in one write with the
    read's window adjusts; else the next turn of the event loop) and written at once. ~25% of
    the server's time was these writes (bench/README.md, "Uploads").
    """

    def __init__(self, session: "_Session", chan: asyncssh.SSHServerChannel):
        super().__init__(session, chan)
        self.connection = chan.get_connection()
        self.held: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        if not self.held and not asyncssh_patches.at_read_end(self.connection, self.flush):
            asyncio.get_running_loop().call_soon(self.flush)
        self.held.append(data)
        self.size += len(data)
        if self.size >= REPLY_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.held:
            return
        data = b"".join(self.held)
        self.held.clear()
        self.size = 0
        if not self.channel.is_closing():  # else the client is gone: as asyncssh drops them
            super().write(data)

    def close(self) -> None:
        self.flush()
        super().close()


def _may_write(head: bytes) -> bool:
    """Whether a request whose first bytes are `head` (fewer than WRITE_HEAD's) may be a write
    that _Session takes: if not, its bytes go to asyncssh's server at once (a short request
    held here would wait for bytes the client never sends)."""
    if len(head) >= 4:
        length = int.from_bytes(head[:4], "big")
        if not WRITE_HEAD.size - 4 <= length <= MAX_SFTP_PACKET_LEN:
            return False
    return len(head) < 5 or head[4] == FXP_WRITE


class _Session(SSHServerStreamSession):
    """An SFTP-only session (no shell, exec or SCP) that counts toward the per-connection cap,
    and knows when the client's requests have ended.

    asyncssh's SFTP server reads requests until a read of the channel fails (end of file, the
    channel or the connection closed) or a request is malformed, then closes every file still
    open through the same SFTPServer.close() as a client's SSH_FXP_CLOSE. `ended` tells the two
    apart: it is set before those closes, by the failed read, the lost connection or a request
    that is not one.

    An upload's write requests are taken where they arrive (`_take_writes`): asyncssh's SFTP
    server reads each one from its stream (the channel's pieces of it joined, a copy of its
    data, a packet object, a task step and a coroutine per request) and answers it; ~45% of the
    event loop's time for one stream was asyncssh's Python (bench/README.md, "Uploads"). A
    write to a file open for upload is taken from the channel's data as it is, the moment
    asyncssh's server waits for the next request holding nothing (`_idle`), so that every
    request is still handled in the order sent and answered in that order; its pieces go to the
    transfer as they are (`RosterSFTPServer.write_parts`), its reply is asyncssh's own bytes.
    Any other request, or a write that is anything but well-formed for such a file, goes to
    asyncssh's server with every byte of it as it came, and so does everything after it until
    that server waits again holding nothing.
    """

    def __init__(self, state: ConnState):
        # asyncssh hands the factory its SSHServerChannel; its annotation says SSHChannel.
        super().__init__(None, self._sftp_server, MIN_SFTP_VERSION, False)  # type: ignore[arg-type]
        self.state = state
        self.ended = ""
        # SFTP frames each request as a 4-byte length, then the request (type, id, ...): the
        # server's reads alternate between the two. A close is the client's own only when the
        # last read completed a whole request.
        self.in_request = False
        state.sessions += 1
        self.replies: _Replies
        self.handler: SFTPServerHandler | None = None
        self.server: RosterSFTPServer | None = None
        # Bytes given to asyncssh's stream, and read from it by its SFTP server: equal when it
        # holds none (neither in its buffer nor in a read not complete yet).
        self.given = 0
        self.taken = 0
        # A request being taken here: its first bytes, while fewer than WRITE_HEAD's; then the
        # write's fields, its data's pieces so far and how many bytes are still to come.
        self.head = b""
        self.taking: tuple[int, ...] | None = None
        self.upload: Transfer | None = None
        self.pieces: list[bytes | memoryview] = []
        self.missing = 0
        self.in_place = 0  # writes taken here (debug log at the end)

    def _sftp_server(self, chan: asyncssh.SSHServerChannel) -> RosterSFTPServer:
        self.server = RosterSFTPServer(chan, self)
        return self.server

    def session_started(self) -> None:
        """asyncssh's own start of the SFTP subsystem (the only one this session accepts),
        with its replies written together (_Replies)."""
        chan = cast(asyncssh.SSHServerChannel, self._chan)
        reader: asyncssh.SSHReader[bytes] = asyncssh.SSHReader(self, chan)
        self.replies = _Replies(self, chan)
        server = cast(asyncssh.SFTPServer, self._init_sftp_server())
        handler = SFTPServerHandler(server, reader, self.replies, self._sftp_version)
        self.handler = handler
        cast(asyncssh.SSHServerConnection, self._conn).create_task(handler.run(), reader.logger)

    async def read(self, datatype, n: int, exact: bool):
        try:
            data = await super().read(datatype, n, exact)
        except BaseException:
            self.ended = self.ended or "the client sent end of file with the file still open"
            raise
        self.taken += len(data)
        self.in_request = not self.in_request
        if not self.in_request and len(data) < 5:  # shorter than a type and an id
            self.ended = self.ended or "the client sent a malformed request"
        return data

    def data_received(self, data: bytes, datatype) -> None:
        if datatype is None:
            self.parts_received((data,))
        else:
            self.state.active = time.monotonic()
            self._give(data, datatype)

    def parts_received(self, parts: Sequence[bytes | memoryview]) -> None:
        """The channel's data of several data messages, in order: what one socket read
        brought (asyncssh_patches, for an upload's packets: one call, not one per 32 KiB
        message), else one message's. What is not taken here goes to asyncssh's stream as
        the channel would give it: once the stream pauses the channel (its buffer full), the
        rest waits in the channel's buffer."""
        self.state.active = time.monotonic()
        for n, data in enumerate(parts):
            if self.head or self.taking is not None or self._idle():
                data = self._take_writes(data)
                if not data:
                    continue
            elif n and self._chan._recv_paused:  # type: ignore[union-attr]
                self._chan._recv_buf.extend((bytes(rest), None) for rest in parts[n:])  # type: ignore[union-attr]
                return
            self._give(bytes(data))

    def _give(self, data: bytes, datatype=None) -> None:
        """Bytes for asyncssh's stream, and so its SFTP server."""
        if datatype is None:
            self.given += len(data)
        super().data_received(data, datatype)

    def _idle(self) -> bool:
        """Whether asyncssh's SFTP server waits for a request's length holding none of its
        bytes (every request before answered), and logs no request (asyncssh's debug log)."""
        waiter = self._read_waiters[None]
        return (
            waiter is not None
            and not waiter.done()
            and not self.in_request
            and self.given == self.taken
            and not self.ended
            and not self._eof_received
            and self.handler is not None
            and not self.handler.logger.isEnabledFor(logging.DEBUG)
        )

    def _take_writes(self, data: bytes | memoryview) -> bytes | memoryview:
        """Take the write requests for uploads at the start of `data` (`_write_to`), and what
        arrived of the next one; what is left, from the first request not taken on, is for
        asyncssh's server (with the first bytes of that request held here before)."""
        view = memoryview(data)
        pos, end = 0, len(data)
        size = WRITE_HEAD.size
        while pos < end:
            if self.taking is None:  # a request starts here, or its first bytes were held
                start, held = pos, self.head
                if held or end - pos < size:
                    pos += min(size - len(held), end - pos)
                    head = held + data[start:pos]
                    self.head = b""
                    if len(head) < size:  # held until the rest comes, if it must come
                        if not _may_write(head):
                            return head
                        self.head = head
                        return b""
                    fields = WRITE_HEAD.unpack(head)
                else:
                    fields = WRITE_HEAD.unpack_from(data, pos)
                    pos += size
                upload = self._write_to(fields)
                if upload is None:
                    return held + data[start:]
                self.taking, self.upload, self.missing = fields, upload, fields[-1]
            take = min(self.missing, end - pos)
            if take:
                self.pieces.append(data if take == end else view[pos : pos + take])
                pos += take
                self.missing -= take
            if not self.missing:
                self._write()
        return b""

    def _write_to(self, fields: tuple[int, ...]) -> Transfer | None:
        """The upload a request (WRITE_HEAD's fields) writes to, if it is a well-formed write
        (its length that of its data, no more) to a file open for upload in this session."""
        length, kind, _, handle_size, handle, _, size = fields
        if (
            kind != FXP_WRITE
            or handle_size != 4
            or length != WRITE_HEAD.size - 4 + size
            or length > MAX_SFTP_PACKET_LEN
        ):
            return None
        assert self.handler is not None
        upload = self.handler._file_handles.get(handle.to_bytes(4, "big"))
        return upload if isinstance(upload, Transfer) else None

    def _write(self) -> None:
        """Make the write taken (its data all here) and answer it as asyncssh's server does."""
        fields, upload, pieces = self.taking, self.upload, self.pieces
        assert fields is not None and upload is not None and self.server and self.handler
        self.taking, self.upload, self.pieces = None, None, []
        _, _, request, _, _, offset, size = fields
        self.in_place += 1
        try:
            self.server.write_parts(upload, offset, pieces, size)
        except asyncssh.SFTPError as exc:
            response = exc.encode(self.handler._version)
            self.handler.send_packet(FXP_STATUS, request, UInt32(request), response)
            return
        if not self.replies.channel.is_closing():  # asyncssh's send_packet
            self.replies.write(OK_STATUS.pack(17, FXP_STATUS, request, FX_OK, 0, 0))

    def _give_back(self) -> None:
        """What arrived of a request being taken goes to asyncssh's server, which then sees
        every byte the client sent (the channel's end of file or close follows)."""
        if self.taking is not None:
            held = b"".join([WRITE_HEAD.pack(*self.taking), *self.pieces])
            self.taking, self.upload, self.pieces = None, None, []
        else:
            held, self.head = self.head, b""
        if held:
            self._give(held)

    def eof_received(self) -> bool:
        self._give_back()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = self.ended or "connection lost with the file still open"
        self.state.sessions -= 1
        self._give_back()
        if self.in_place:
            log.debug(
                "sftp session of %s: %d writes taken in place", self.state.username, self.in_place
            )
        super().connection_lost(exc)


@dataclass(frozen=True)
class Refusal:
    """Why a connection is refused once its SSH version is sent, and whether the source
    itself went past its limit (defender points) or others filled the slots (none)."""

    reason: str
    scored: bool


class Slots:
    """The connection caps (per address and in all), counted where connections are accepted:
    one acceptor for all the SFTP processes (sftp_workers), so the caps hold for the port."""

    def __init__(self) -> None:
        self.per_ip: dict[str, int] = {}
        self.total = 0

    def take(self, ip: str | None) -> Refusal | None:
        """Count a new connection; why it must be refused, if it must."""
        key = ip or ""
        self.per_ip[key] = self.per_ip.get(key, 0) + 1
        self.total += 1
        if self.per_ip[key] > settings.SFTP_MAX_CONNECTIONS_PER_IP:
            return Refusal("too many connections from this address", scored=True)
        if self.total > settings.SFTP_MAX_CONNECTIONS:
            # Not this client's doing (others hold the slots): no defender points.
            return Refusal("too many connections", scored=False)
        return None

    def release(self, ip: str | None) -> None:
        key = ip or ""
        self.per_ip[key] -= 1
        if not self.per_ip[key]:
            del self.per_ip[key]
        self.total -= 1


class Ticket:
    """An accepted connection as the process serving it sees it: the district's address,
    the acceptor's verdict on the caps, and how to give its slot back (once)."""

    def __init__(self, ip: str | None, refusal: Refusal | None, release: Callable[[], None]):
        self.ip = ip
        self.refusal = refusal
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


class RosterSSHServer(asyncssh.SSHServer):
    """Authentication and connection limits for one SSH connection."""

    live: set[asyncssh.SSHServerConnection] = set()  # for a graceful shutdown (drain)

    def __init__(self, ticket: Ticket):
        self.ticket = ticket
        # The district's address: from the PROXY header behind a load balancer (Listener).
        self.ip = ticket.ip

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        RosterSSHServer.live.add(conn)
        self.state = ConnState(ip=self.ip)
        conn.set_extra_info(rosterdrop=self.state)
        self.idle_watch: asyncio.Task | None = None
        if self.ticket.refusal is not None:
            self._refuse_connection(self.ticket.refusal)

    def _refuse_connection(self, refusal: Refusal) -> None:
        self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, refusal.reason.capitalize())
        refused = _db_write(auth.connection_refused)(self.ip, refusal.reason, refusal.scored)
        asyncio.get_running_loop().create_task(refused)

    def connection_lost(self, exc: Exception | None) -> None:
        RosterSSHServer.live.discard(self.conn)
        if self.idle_watch:
            self.idle_watch.cancel()
        self.ticket.release()

    async def begin_auth(self, username: str) -> bool:
        # Never return False here: asyncssh reads False as "no authentication needed".
        if await _refused_as_banned(username, self.ip):
            self.conn.disconnect(asyncssh.DISC_HOST_NOT_ALLOWED_TO_CONNECT, "Access denied")
            return True
        self.state.username = username
        self.state.login = await _db(auth.find_login)(username)
        return True

    def session_requested(self) -> _Session | bool:
        # asyncssh never calls this when create_server gets sftp_factory, hence no factory
        # there: this is where the sessions-per-connection cap can refuse a channel cleanly.
        if self.state.sessions >= settings.SFTP_MAX_SESSIONS:
            log.info("refusing session %d on one connection", self.state.sessions + 1)
            return False
        return _Session(self.state)

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def _login_for(self, username: str) -> Login | None:
        return self.state.login if username == self.state.username else None

    async def validate_password(self, username: str, password: str) -> bool:
        login = self._login_for(username)
        allowed = login is not None and login.ip_allowed(self.ip)
        if login is not None and allowed and await _db(login.check_password)(password):
            self.state.method = "password"
            return True
        # Every failure waits, the last one too (it disconnects), as OpenSSH does.
        await asyncio.sleep(settings.SFTP_LOGIN_DELAY)
        await self._failed(username, login, "password")
        return False

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Called twice for a good key (query, then signed): only refusals count as failures.
        login = self._login_for(username)
        allowed = login is not None and login.ip_allowed(self.ip)
        keys = login.authorized_keys() if login is not None and allowed else []
        if any(k.public_data == key.public_data for k in keys):
            self.state.method = f"public key {key.get_fingerprint('sha256')}"
            return True
        await self._failed(username, login, "public key")
        return False

    async def _failed(self, username: str, login: Login | None, method: str) -> None:
        self.state.failures += 1
        banned = await _db_write(auth.failed)(username, login, self.ip, method, "sftp")
        if banned or self.state.failures >= settings.SFTP_MAX_AUTH_TRIES:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures"
            )

    def auth_completed(self) -> None:
        login = self.state.login
        assert login is not None

        how = f"sftp, {self.state.method}"
        loop = asyncio.get_running_loop()
        loop.create_task(_db_write(auth.succeeded)(login, self.ip, how))
        if settings.SFTP_IDLE_TIMEOUT > 0:
            self.idle_watch = loop.create_task(self._close_when_idle(settings.SFTP_IDLE_TIMEOUT))

    async def _close_when_idle(self, timeout: float) -> None:
        """Close a logged-in connection that sends nothing for `timeout` seconds (SFTPGo's
        idle_timeout; asyncssh has no such option): its slots go back to other districts."""
        self.state.active = time.monotonic()
        while (idle := time.monotonic() - self.state.active) < timeout:
            await asyncio.sleep(timeout - idle)
        log.info("closing sftp connection of %s: idle for %g s", self.state.username, timeout)
        self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"Idle for {timeout:g} seconds")


async def serve(sock: socket.socket, options: asyncssh.SSHServerConnectionOptions, ticket: Ticket):
    """Serve one accepted connection (its PROXY header read, its address not banned) until
    its login ends; the connection itself goes on in asyncssh's hands."""
    factory = functools.partial(RosterSSHServer, ticket)
    try:
        await asyncssh.run_server(sock, options=options, server_factory=factory)
    except Exception as exc:  # refused logins and dropped connections end here
        ticket.release()  # if asyncssh never made the connection; else done already
        log.info("sftp connection from %s ended before login: %s", ticket.ip, exc)


async def drain(grace: float) -> None:
    """Give this process's connections `grace` seconds to end by themselves (an upload in
    flight finishes), then disconnect the rest; a cut upload is never kept."""
    deadline = time.monotonic() + grace
    while RosterSSHServer.live and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for conn in list(RosterSSHServer.live):
        log.info("closing an sftp connection: the server is shutting down")
        conn.disconnect(asyncssh.DISC_BY_APPLICATION, "The server is shutting down")
    for _ in range(50):  # their files are discarded as the connections end
        if not RosterSSHServer.live:
            break
        await asyncio.sleep(0.1)


class Handler(Protocol):
    """Who serves the connections a Listener accepted: this process (InProcess) or the
    SFTP worker processes (sftp_workers.Workers)."""

    async def hand(
        self,
        sock: socket.socket,
        ip: str | None,
        refusal: Refusal | None,
        release: Callable[[], None],
    ) -> None: ...

    async def drain(self, grace: float) -> None: ...


class InProcess:
    """Connections served by the acceptor's own event loop (ROSTERDROP_SFTP_PROCESSES=1)."""

    def __init__(self, options: asyncssh.SSHServerConnectionOptions):
        self.options = options

    async def hand(
        self,
        sock: socket.socket,
        ip: str | None,
        refusal: Refusal | None,
        release: Callable[[], None],
    ) -> None:
        await serve(sock, self.options, Ticket(ip, refusal, release))

    async def drain(self, grace: float) -> None:
        await drain(grace)


class Listener:
    """The SFTP port. Connections are accepted here rather than by asyncssh, so that a load
    balancer's PROXY header is read first (the district's own address, proxy_protocol), one
    from a banned address is closed before the server sends a byte (no version, no key
    exchange: nothing to spend CPU on), and the connection caps are counted in one place
    (Slots); every other one is handed to whoever serves it (Handler)."""

    def __init__(self, sock: socket.socket, handler: Handler):
        self.sock = sock
        self.handler = handler
        self.slots = Slots()
        self.connections: set[asyncio.Task] = set()
        self.accepting = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except OSError as exc:  # out of file descriptors, a connection reset meanwhile
                log.warning("sftp accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(
                self._serve(conn, proxy_protocol.Client(peer[0], peer[1], False))
            )
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)

    async def _serve(self, conn: socket.socket, peer: proxy_protocol.Client) -> None:
        try:
            ip = (await proxy_protocol.read_async(conn, peer)).ip
        except (proxy_protocol.Refused, OSError) as exc:
            conn.close()
            await _db_write(auth.proxy_refused)(peer.ip, str(exc), "sftp")
            return
        if await _refused_as_banned("", ip):
            conn.close()
            return
        refusal = self.slots.take(ip)
        await self.handler.hand(conn, ip, refusal, functools.partial(self.slots.release, ip))

    def close(self) -> None:
        self.accepting.cancel()
        self.sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(self.accepting, return_exceptions=True)

    async def drain(self, grace: float) -> None:
        """Once closed: the connections left get `grace` seconds to end (Handler.drain)."""
        await self.handler.drain(grace)


async def server_options() -> asyncssh.SSHServerConnectionOptions:
    """asyncssh's options for every connection: the deployment's persistent host keys (from
    the database every SFTP process shares), the algorithms, the limits."""
    from rosterdrop.intake import hostkey

    asyncssh_patches.install()
    keys = asyncssh.load_keypairs(await _db(hostkey.load_all)())
    for keypair in keys:  # the RSA key would also sign with ssh-rsa (SHA-1): never offered
        keypair.host_key_algorithms = [
            a for a in keypair.host_key_algorithms if a in hostkey.HOST_KEY_ALGS
        ]
    return await asyncssh.SSHServerConnectionOptions.construct(
        server_host_keys=keys,
        send_server_host_keys=True,
        server_version="rosterdrop",
        allow_pty=False,
        # No line editor wrapped around each session (asyncssh's default for a server: for a
        # shell's pty, which is refused here), so an upload's data and replies do not go
        # through two more layers of calls.
        line_editor=False,
        agent_forwarding=False,
        x11_forwarding=False,
        kbdint_auth=False,
        login_timeout=settings.SFTP_LOGIN_TIMEOUT,
        keepalive_interval=settings.SFTP_KEEPALIVE_INTERVAL,
        keepalive_count_max=settings.SFTP_KEEPALIVE_COUNT_MAX,
        kex_algs=KEX_ALGS,
        encryption_algs=ENCRYPTION_ALGS,
        mac_algs=MAC_ALGS,
    )


def listen(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port), backlog=128)
    sock.setblocking(False)
    return sock
