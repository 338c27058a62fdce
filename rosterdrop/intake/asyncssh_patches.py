"""Per-packet costs of asyncssh's receiving, cut for uploads (bench/README.md, "Uploads").

* chacha20-poly1305@openssh.com, which OpenSSH clients choose first, so every byte of an
  upload goes through it: asyncssh 2.24.1 (`asyncssh/crypto/chacha.py`) builds three
  `cryptography` ChaCha20 objects per packet (the length, the Poly1305 key, the payload) and
  joins header and payload to tag them (~24% of the SFTP server's time). `ChachaCipher` keeps
  each direction's two ChaCha20 contexts for the connection's life and moves them to the
  packet's nonce (`reset_nonce`); the tag is checked by one Poly1305 call over the packet as
  it arrived (`_decrypt_packet` joins its two parts once). The same cipher:
  tests/test_sftp_units.py checks it against asyncssh's own, both ways.
* An upload is one SSH_MSG_CHANNEL_DATA packet per 32 KiB (OpenSSH's client sends no larger
  ones, whatever the server's maximum packet size), and asyncssh's generic path spends some 35
  Python calls and ~6 copies on each. Such a packet is read where it lies in the socket read
  (`_read_channel_data`) and handled as asyncssh's path would (`_channel_taking`, `_taken`),
  its data handed to the channel's session with the rest of the read's for that channel, in
  one call (`parts_received`: the session's per-call work once per read, not per 32 KiB
  packet); any other packet goes to asyncssh's path, FEED bytes at a
  time (appended to its input buffer, from the front of which each packet taken off copies the
  rest twice: in 256 KiB at once, ~9 times its size in copies), where channel data still
  takes the short way (`_recv_channel_data`). The keepalive timer is reset once per read.
* What the server sends while it handles a socket read (an upload's window adjusts and the
  replies to its writes, each packet after an SSH_MSG_IGNORE of its own) is held and written
  at the read's end at once (`_send`, `at_read_end`): asyncssh writes each packet to the
  transport as it is made, a `send` each (two per reply batch and per window adjust: ~8,600
  for one 906 MB stream, more than its ~4,700 reads).

`install()` applies them, and only for the asyncssh version they were written against
(requirements.lock pins it): with another one asyncssh is left as it is (slower), and the
test of the pin fails, so that an upgrade is checked against the new version's code first.
Nothing else changes: the same algorithms, the same packets."""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

import asyncssh
from asyncssh import encryption
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.logging import SSHLogger
from asyncssh.misc import DisconnectError
from asyncssh.packet import UInt32, UInt64
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

log = logging.getLogger(__name__)

ASYNCSSH_VERSION = "2.24.1"  # the version whose code this was written against
FEED = 32 * 1024  # bytes handed to asyncssh's packet parser at once

# ChaCha20's 16-byte IV as OpenSSH uses it: a 64-bit little-endian block counter, then the
# 64-bit big-endian packet sequence number asyncssh passes as the nonce.
_BLOCK_0 = bytes(8)
_BLOCK = 64  # ChaCha20's block: block 0 gives the Poly1305 key, the payload starts at block 1
_ZEROS = bytes(_BLOCK)


def _context(key: bytes):
    return Cipher(ChaCha20(key, bytes(16)), mode=None).encryptor()


class ChachaCipher:
    """asyncssh's ChachaCipher interface (encrypt_and_sign, decrypt_header,
    verify_and_decrypt), one instance per direction of a connection."""

    def __init__(self, key: bytes):
        half = len(key) // 2
        self._payload = _context(key[:half])  # K_2: the Poly1305 key and the payload
        self._length = _context(key[half:])  # K_1: the packet length only

    def _poly1305_key(self, nonce: bytes) -> bytes:
        """Start the payload's keystream at the packet's block 0, which keys its tag; the
        payload's own bytes then come from block 1 on."""
        self._payload.reset_nonce(_BLOCK_0 + nonce)
        return self._payload.update(_ZEROS)[:32]

    def encrypt_and_sign(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes]:
        header = self._length_stream(header, nonce)
        key = self._poly1305_key(nonce)
        packet = header + self._payload.update(data)
        return packet, Poly1305.generate_tag(key, packet)

    def _length_stream(self, header: bytes | memoryview, nonce: bytes) -> bytes:
        """The 4-byte length XORed with K_1's block 0 (encrypting and decrypting alike)."""
        self._length.reset_nonce(_BLOCK_0 + nonce)
        return self._length.update(header)

    decrypt_header = _length_stream

    def verify_and_decrypt(
        self, header: bytes, data: bytes, nonce: bytes, tag: bytes
    ) -> bytes | None:
        return self.open(header + data, nonce, tag)

    def open(self, packet: bytes | memoryview, nonce: bytes, tag: bytes) -> bytes | None:
        """The payload of `packet` (its encrypted length, then the encrypted payload), or
        None if its tag is not `tag`. One Poly1305 call over the packet as it arrived: a
        Poly1305 object per packet and two updates cost ~70% more (32 KiB packets)."""
        try:
            Poly1305.verify_tag(self._poly1305_key(nonce), packet, tag)
        except InvalidSignature:
            return None
        return self._payload.update(memoryview(packet)[4:])


def _decrypt_packet(
    self: encryption.ChachaEncryption,
    seq: int,
    first: bytes,
    rest: bytes,
    header_len: int,
    mac: bytes,
) -> bytes | None:
    """ChachaEncryption.decrypt_packet, the packet joined once (asyncssh joins its payload's
    two parts, then the tag's check joins the length to them)."""
    return cast(ChachaCipher, self._cipher).open(first + rest, UInt64(seq), mac)


_recv_pkthdr = SSHConnection._recv_pkthdr
_recv_packet = SSHConnection._recv_packet
_asyncssh_send = SSHConnection._send


def _fed(self: SSHConnection, data: bytes, datatype: object = None) -> None:
    """SSHConnection.data_received, the keepalive timer reset once per read (not once per
    packet: a timer cancelled and one scheduled each). An upload's packets are read where
    they lie in the read (`_read_channel_data`); the rest goes to asyncssh FEED bytes at a
    time (`_feed`)."""
    self._reset_keepalive_timer()
    held = self._held = _Held(self._transport)  # type: ignore[attr-defined]
    try:
        cipher = _fast_cipher(self)
        state = getattr(self._recv_handler, "__func__", None)
        if cipher is None or state not in (_recv_pkthdr, _recv_channel_data):
            _feed(self, data)  # a packet being handled (an awaitable), or another cipher
            return
        buf = self._inpbuf + data if self._inpbuf else data
        if state is _recv_channel_data:  # a first block that asyncssh's path took off: put back
            # (chacha's header read changes nothing else: its length is read again from it)
            buf = self._packet + buf
            self._packet = b""
            self._recv_handler = self._recv_pkthdr
        self._inpbuf = b""
        _parse(self, cipher, buf)
    finally:
        _send_held(self, held)


class _Held:
    """What the server sends while it handles one socket read (`_fed`): the packets, and what
    is to run before they go (`at_read_end`); the transport they go to, the one the read came
    from (asyncssh drops its reference when it closes the connection, and aborts the transport
    a turn of the loop later: what was sent before still goes, as asyncssh's own writes do)."""

    def __init__(self, transport: asyncio.Transport | None):
        self.transport = transport
        self.packets: list[bytes] = []
        self.hooks: list[Callable[[], None]] = []


def _send(self: SSHConnection, data: bytes) -> None:
    """SSHConnection._send, held to the end of the socket read being handled, if one is."""
    held: _Held | None = getattr(self, "_held", None)
    if held is None:
        _asyncssh_send(self, data)
    elif self._transport:  # asyncssh's: nothing once the connection is closing
        held.packets.append(data)


def at_read_end(conn: SSHConnection, hook: Callable[[], None]) -> bool:
    """Run `hook` at the end of the socket read `conn` is handling, before what it sent goes
    out (so what `hook` sends goes in the same write); False if it handles none now."""
    held: _Held | None = getattr(conn, "_held", None)
    if held is None:
        return False
    held.hooks.append(hook)
    return True


def _send_held(self: SSHConnection, held: _Held) -> None:
    """The read handled: its hooks run (a failing one ends the connection as a failing packet
    handler does), then what was sent goes out in one write."""
    for hook in held.hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - asyncssh's own: it closes the connection
            self.internal_error()
    self._held = None  # type: ignore[attr-defined]
    if held.packets and held.transport is not None:
        # asyncssh's _send: nothing if the connection is being lost
        with contextlib.suppress(ConnectionError):
            held.transport.write(b"".join(held.packets))


def _feed(self: SSHConnection, data: bytes | memoryview) -> None:
    """FEED bytes at a time to asyncssh's packet parser; none once the connection closed
    itself on one of them (asyncssh drops the rest of the read then)."""
    view = memoryview(data)
    for start in range(0, len(view), FEED):
        if self._transport is None:
            return
        self._inpbuf += view[start : start + FEED]
        _parse(self)


def _parse(self: SSHConnection, cipher: "ChachaCipher | None" = None, buf: bytes = b"") -> None:
    """SSHConnection._recv_data without its reset of the keepalive timer (_fed's). With a
    cipher, the channel data at the start of `buf` is read in place first; what is left waits
    for the next read if it is part of a packet, else it is asyncssh's. A failure either way
    ends the connection as asyncssh's own does."""
    try:
        if cipher is not None:
            pos, theirs = _read_channel_data(self, cipher, buf)
            self._inpbuf = buf[pos:]
            if not theirs:
                return
        while self._inpbuf and self._recv_handler():
            pass
    except DisconnectError as exc:
        self._send_disconnect(exc.code, exc.reason, exc.lang)
        self._force_close(exc)
    except Exception:  # noqa: BLE001 - asyncssh's own: it closes the connection
        self.internal_error()


def _read_channel_data(self: SSHConnection, cipher: ChachaCipher, buf: bytes) -> tuple[int, bool]:
    """Hand the channel data packets at the start of `buf` to their channels
    (`_channel_taking`); where they end, and whether a packet for asyncssh's own path starts
    there (else what is left is part of a packet). Each packet is read in place: no copy of
    it but its payload's. A run of packets for one channel goes to its session in one call at
    the run's end (`parts_received`), the channel's checks made once at its start: nothing
    else runs between them, so nothing changes the channel's state but the window, whose
    steps are taken packet by packet (`_taken`)."""
    view = memoryview(buf)
    pos, size = 0, len(buf)
    macsize, blocksize = self._recv_macsize, self._recv_blocksize
    chan: SSHChannel | None = None  # the run's channel, its number and its packets' data
    number = -1
    parts: list[memoryview] = []
    theirs = False
    while size - pos >= blocksize and self._transport is not None:
        seq = self._recv_seq
        nonce = UInt64(seq)
        length = int.from_bytes(cipher.decrypt_header(view[pos : pos + 4], nonce), "big")
        if length > self._max_recv_pktlen:  # asyncssh's path refuses it
            theirs = True
            break
        tagged = pos + 4 + length
        if size < tagged + macsize:
            break
        payload = cipher.open(view[pos:tagged], nonce, buf[tagged : tagged + macsize])
        fields = _channel_data_fields(payload)
        if fields is None or chan is None or fields[0] != number or fields[1] > chan._recv_window:
            if chan is not None and parts:  # the run ends: its data goes before the rest
                _hand(chan, parts)
                parts = []
            chan = _channel_taking(self, fields)
            if chan is None or fields is None:
                theirs = True
                break
            number = fields[0]
        _taken(self, chan, fields[1], seq)
        parts.append(memoryview(cast(bytes, payload))[10 : 10 + fields[1]])
        pos = tagged + macsize
    if chan is not None and parts:
        _hand(chan, parts)
    return pos, theirs


def _fast_cipher(self: SSHConnection) -> "ChachaCipher | None":
    """The connection's chacha20-poly1305 cipher for what it receives, when its channel data
    may take the short way: logged in, no compression, nothing logged per packet (asyncssh's
    debug level below 2)."""
    cipher = getattr(self._recv_encryption, "_cipher", None)
    if (
        type(cipher) is not ChachaCipher
        or self._decompressor
        or not self._auth_complete
        or SSHLogger._debug_level >= 2  # noqa: SLF001 - asyncssh's own switch
    ):
        return None
    return cipher


_ACCEPT = SSHChannel._accept_data
_OPEN = "open"
_CLOSING = frozenset({"close_pending", "closed"})


def _channel_data_fields(payload: bytes | None) -> tuple[int, int] | None:
    """The channel number and data size of a decrypted packet that is well-formed channel
    data (its padding length first) as asyncssh's path reads it; None for any other packet."""
    if payload is None or len(payload) < 10 or payload[1] != MSG_CHANNEL_DATA or not payload[0]:
        return None
    size = int.from_bytes(payload[6:10], "big")
    if 10 + size != len(payload) - payload[0] or not size:
        return None
    return int.from_bytes(payload[2:6], "big"), size


def _channel_taking(self: SSHConnection, fields: tuple[int, int] | None) -> SSHChannel | None:
    """The channel that takes a channel data packet (`_channel_data_fields`) now, if
    asyncssh's path would hand its data to the channel's session (`SSHChannel._process_data`,
    `_accept_data`) and that session takes several packets' data at once: the channel open,
    within its window, not closing, not paused, bytes (no encoding); None for any other."""
    if fields is None:
        return None
    number, size = fields
    chan = self._channels.get(number)
    if (
        chan is None
        or type(chan)._accept_data is not _ACCEPT  # a tun/tap channel strips its own header
        or chan._recv_state != _OPEN
        or size > chan._recv_window
        or chan._send_state in _CLOSING
        or chan._recv_paused
        or chan._encoding
        or not hasattr(chan._session, "parts_received")
    ):
        return None
    return chan


def _taken(self: SSHConnection, chan: SSHChannel, size: int, seq: int) -> None:
    """What asyncssh's path does for a channel data packet besides handing its data over:
    the window (`_accept_data`; `_deliver_data` sends an adjust once it is below half), the
    next sequence number (`_finish_recv_packet`)."""
    window = chan._recv_window - size
    if window < chan._init_recv_window / 2:
        chan.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(chan._init_recv_window - window))
        window = chan._init_recv_window
    chan._recv_window = window
    self._finish_recv_packet(MSG_CHANNEL_DATA, seq)


def _hand(chan: SSHChannel, parts: list[memoryview]) -> None:
    """A run of channel data packets' data to the channel's session, in one call."""
    chan._session.parts_received(parts)  # type: ignore[union-attr]


def _recv_channel_data(self: SSHConnection) -> bool:
    """SSHConnection._recv_packet (asyncssh's path, once it read a packet's first block) with
    the short way for channel data: such a packet goes where asyncssh's own path takes it,
    without the ~35 Python calls of the generic path (packet object, handler lookups, log
    calls); any other packet, or one that does not check out, takes asyncssh's path from the
    start (a chacha packet is decrypted from its sequence number alone, so decrypting it again
    is the same)."""
    cipher = _fast_cipher(self)
    if cipher is None:
        return _recv_packet(self)
    rem = 4 + self._pktlen + self._recv_macsize - self._recv_blocksize
    buf = self._inpbuf
    if len(buf) < rem:
        return False
    tagged = rem - self._recv_macsize
    seq = self._recv_seq
    payload = cipher.open(self._packet + memoryview(buf)[:tagged], UInt64(seq), buf[tagged:rem])
    fields = _channel_data_fields(payload)
    chan = _channel_taking(self, fields)
    if chan is None or fields is None:
        return _recv_packet(self)
    self._inpbuf = buf[rem:]
    self._packet = b""
    _taken(self, chan, fields[1], seq)
    _hand(chan, [memoryview(cast(bytes, payload))[10 : 10 + fields[1]]])
    return True


def install() -> bool:
    """Apply the patches to asyncssh; whether they are (not with an asyncssh other than the
    pinned one)."""
    if asyncssh.__version__ != ASYNCSSH_VERSION:
        log.warning(
            "asyncssh %s, not %s: its own chacha20-poly1305 and packet parsing (slower)",
            asyncssh.__version__,
            ASYNCSSH_VERSION,
        )
        return False
    encryption.ChachaCipher = ChachaCipher  # type: ignore[assignment,misc]
    encryption.ChachaEncryption.decrypt_packet = _decrypt_packet  # type: ignore[method-assign]
    SSHConnection.data_received = _fed  # type: ignore[method-assign]
    SSHConnection._recv_packet = _recv_channel_data  # type: ignore[method-assign]
    SSHConnection._send = _send  # type: ignore[method-assign]
    return True
