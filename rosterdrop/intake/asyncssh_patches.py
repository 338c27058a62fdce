"""Two per-packet costs of asyncssh's receiving, cut for uploads (bench/README.md, "Uploads").

* chacha20-poly1305@openssh.com, which OpenSSH clients choose first, so every byte of an
  upload goes through it: asyncssh 2.24.1 (`asyncssh/crypto/chacha.py`) builds three
  `cryptography` ChaCha20 objects per packet (the length, the Poly1305 key, the payload) and
  joins header and payload to tag them (~24% of the SFTP server's time). `ChachaCipher` keeps
  each direction's two ChaCha20 contexts for the connection's life and moves them to the
  packet's nonce (`reset_nonce`); the tag is computed over the two parts. The same cipher:
  tests/test_sftp_units.py checks it against asyncssh's own, both ways.
* The bytes of a socket read (up to 256 KiB, asyncio's) are appended to asyncssh's input
  buffer, and each packet taken off its front copies the rest of the buffer twice (`bytes`
  slices): eight 32 KiB packets in one read cost ~9 times their size in copies. `FEED` hands
  them to asyncssh a packet's worth at a time.

`install()` applies both, and only for the asyncssh version they were written against
(requirements.lock pins it): with another one asyncssh is left as it is (slower), and the
test of the pin fails, so that an upgrade is checked against the new version's code first.
Nothing else changes: the same algorithms, the same packets.
"""

import logging

import asyncssh
from asyncssh import encryption
from asyncssh.connection import SSHConnection
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

    def _poly1305(self, nonce: bytes) -> Poly1305:
        """Start the payload's keystream at the packet's block 0, which keys its tag; the
        payload's own bytes then come from block 1 on."""
        self._payload.reset_nonce(_BLOCK_0 + nonce)
        return Poly1305(self._payload.update(_ZEROS)[:32])

    def encrypt_and_sign(self, header: bytes, data: bytes, nonce: bytes) -> tuple[bytes, bytes]:
        header = self._length_stream(header, nonce)
        tag = self._poly1305(nonce)
        data = self._payload.update(data)
        tag.update(header)
        tag.update(data)
        return header + data, tag.finalize()

    def decrypt_header(self, header: bytes, nonce: bytes) -> bytes:
        return self._length_stream(header, nonce)

    def _length_stream(self, header: bytes, nonce: bytes) -> bytes:
        """The 4-byte length XORed with K_1's block 0 (encrypting and decrypting alike)."""
        self._length.reset_nonce(_BLOCK_0 + nonce)
        return self._length.update(header)

    def verify_and_decrypt(
        self, header: bytes, data: bytes, nonce: bytes, tag: bytes
    ) -> bytes | None:
        check = self._poly1305(nonce)
        check.update(header)
        check.update(data)
        try:
            check.verify(tag)
        except InvalidSignature:
            return None
        return self._payload.update(data)


_data_received = SSHConnection.data_received


def _fed(self: SSHConnection, data: bytes, datatype: object = None) -> None:
    """SSHConnection.data_received, FEED bytes at a time; none once the connection closed
    itself on one of them (asyncssh drops the rest of the read then)."""
    view = memoryview(data)
    for start in range(0, len(view), FEED):
        if self._transport is None:
            return
        _data_received(self, view[start : start + FEED])  # type: ignore[arg-type]


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
    SSHConnection.data_received = _fed  # type: ignore[method-assign]
    return True
