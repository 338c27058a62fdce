"""Per-packet costs of asyncssh's receiving, cut for uploads (bench/README.md, "Uploads").

* chacha20-poly1305@openssh.com, which OpenSSH clients choose first, so every byte of an
  upload goes through it: asyncssh 2.24.1 (`asyncssh/crypto/chacha.py`) builds three
  `cryptography` ChaCha20 objects per packet (the length, the Poly1305 key, the payload) and
  joins header and payload to tag them (~24% of the SFTP server's time). `ChachaCipher` keeps
  each direction's two ChaCha20 contexts for the connection's life and moves them to the
  packet's nonce (`reset_nonce`); the tag is checked by one Poly1305 call over the packet as
  it arrived (`_decrypt_packet` joins its two parts once). The same cipher:
  tests/test_sftp_units.py checks it against asyncssh's own, both ways.
* The bytes of a socket read (up to 256 KiB, asyncio's) are appended to asyncssh's input
  buffer, and each packet taken off its front copies the rest of the buffer twice (`bytes`
  slices): eight 32 KiB packets in one read cost ~9 times their size in copies. `FEED` hands
  them to asyncssh a packet's worth at a time, with the keepalive timer reset once per read.
* An upload is one SSH_MSG_CHANNEL_DATA packet per 32 KiB (OpenSSH's client sends no larger
  ones, whatever the server's maximum packet size), and asyncssh's generic path spends ~30
  Python calls on each: `_recv_channel_data` takes such a packet to the channel directly.

`install()` applies them, and only for the asyncssh version they were written against
(requirements.lock pins it): with another one asyncssh is left as it is (slower), and the
test of the pin fails, so that an upgrade is checked against the new version's code first.
Nothing else changes: the same algorithms, the same packets."""

import logging
from typing import cast

import asyncssh
from asyncssh import encryption
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.logging import SSHLogger
from asyncssh.misc import DisconnectError
from asyncssh.packet import UInt64
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

    def decrypt_header(self, header: bytes, nonce: bytes) -> bytes:
        return self._length_stream(header, nonce)

    def _length_stream(self, header: bytes, nonce: bytes) -> bytes:
        """The 4-byte length XORed with K_1's block 0 (encrypting and decrypting alike)."""
        self._length.reset_nonce(_BLOCK_0 + nonce)
        return self._length.update(header)

    def verify_and_decrypt(
        self, header: bytes, data: bytes, nonce: bytes, tag: bytes
    ) -> bytes | None:
        return self.open(header + data, nonce, tag)

    def open(self, packet: bytes, nonce: bytes, tag: bytes) -> bytes | None:
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


_recv_packet = SSHConnection._recv_packet


def _fed(self: SSHConnection, data: bytes, datatype: object = None) -> None:
    """SSHConnection.data_received, FEED bytes at a time; none once the connection closed
    itself on one of them (asyncssh drops the rest of the read then). The keepalive timer is
    reset once per read, not once per FEED bytes (a timer cancelled and one scheduled each)."""
    self._reset_keepalive_timer()
    view = memoryview(data)
    for start in range(0, len(view), FEED):
        if self._transport is None:
            return
        self._inpbuf += view[start : start + FEED]
        _parse(self)


def _parse(self: SSHConnection) -> None:
    """SSHConnection._recv_data without its reset of the keepalive timer (_fed's)."""
    try:
        while self._inpbuf and self._recv_handler():
            pass
    except DisconnectError as exc:
        self._send_disconnect(exc.code, exc.reason, exc.lang)
        self._force_close(exc)
    except Exception:  # noqa: BLE001 - asyncssh's own: it closes the connection
        self.internal_error()


_ACCEPT = SSHChannel._accept_data
_OPEN = "open"
_CLOSING = frozenset({"close_pending", "closed"})


def _recv_channel_data(self: SSHConnection) -> bool:
    """SSHConnection._recv_packet with a short way for the packets of an upload: channel data
    sealed with chacha20-poly1305, for an open channel that takes it now, nothing logged
    (asyncssh's debug level below 2). Such a packet goes where asyncssh's own path takes it
    (the channel's window, `_deliver_data`, the packet's sequence number), without the ~30
    Python calls of the generic path (packet object, handler lookups, log calls); any other
    packet, or one that does not check out, takes asyncssh's path from the start (a chacha
    packet is decrypted from its sequence number alone, so decrypting it again is the same)."""
    cipher = getattr(self._recv_encryption, "_cipher", None)
    if (
        type(cipher) is not ChachaCipher
        or self._decompressor
        or not self._auth_complete
        or SSHLogger._debug_level >= 2  # noqa: SLF001 - asyncssh's own switch
    ):
        return _recv_packet(self)
    rem = 4 + self._pktlen + self._recv_macsize - self._recv_blocksize
    buf = self._inpbuf
    if len(buf) < rem:
        return False
    tagged = rem - self._recv_macsize
    seq = self._recv_seq
    payload = cipher.open(self._packet + memoryview(buf)[:tagged], UInt64(seq), buf[tagged:rem])
    if payload is None or len(payload) < 10 or payload[1] != MSG_CHANNEL_DATA or not payload[0]:
        return _recv_packet(self)
    end = len(payload) - payload[0]
    size = int.from_bytes(payload[6:10], "big")
    chan = self._channels.get(int.from_bytes(payload[2:6], "big"))
    if (
        10 + size != end
        or not size
        or chan is None
        or type(chan)._accept_data is not _ACCEPT  # a tun/tap channel strips its own header
        or chan._recv_state != _OPEN
        or size > chan._recv_window
        or chan._send_state in _CLOSING
        or chan._recv_paused
        or chan._encoding
    ):
        return _recv_packet(self)
    self._inpbuf = buf[rem:]
    self._packet = b""
    chan._recv_window -= size
    chan._deliver_data(payload[10:end], None)
    self._finish_recv_packet(MSG_CHANNEL_DATA, seq)
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
    return True
