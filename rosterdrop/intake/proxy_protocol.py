"""The PROXY protocol version 2 header a TCP load balancer (HAProxy `send-proxy-v2`) puts in
front of a connection, so that SFTP and FTPS see the district's own address, not the balancer's.

Neither asyncssh nor pyftpdlib reads it: the front ends accept connections themselves, read
the header here, then hand the socket over. The rules are the protocol's (haproxy
doc/proxy-protocol.txt): a header is read only from a trusted proxy
(ROSTERDROP_TRUSTED_PROXIES) and is then required -- a receiver never guesses whether one is
there -- so a connection from a trusted proxy without a valid header is closed. A LOCAL header
(the balancer's own health check) and an address family other than TCP over IPv4 or IPv6 keep
the connection's own addresses. Only the header's bytes are read: what follows is the client's.
From any other address nothing is read here; a header it sends reaches the protocol server,
which refuses it as it refuses any other garbage (asyncssh: "Unsupported SSH version"; FTPS:
`FTPSHandler`).
"""

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from rosterdrop.networks import trusted_proxy

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED = 16  # signature, version and command, family and protocol, length of the addresses
# A balancer sends the header with the connection: waiting longer means it is not coming.
TIMEOUT = 5.0
LOCAL, PROXY = 0x0, 0x1
INET, INET6 = 0x1, 0x2


class Refused(Exception):
    """The connection is to be closed; the message says why (for the log and audit)."""


@dataclass(frozen=True)
class Client:
    """Who is at the other end: the address the balancer saw, or the connection's own."""

    ip: str
    port: int
    proxied: bool  # the address came from a PROXY header


def length(fixed: bytes) -> int:
    """How many bytes of addresses follow the fixed part, which must be a v2 header's."""
    if not fixed.startswith(SIGNATURE):
        if fixed.startswith(b"PROXY "):
            raise Refused("a PROXY protocol v1 header (only v2 is read: send-proxy-v2)")
        raise Refused("no PROXY protocol v2 header from a trusted proxy")
    if fixed[12] >> 4 != 2:
        raise Refused(f"PROXY protocol version {fixed[12] >> 4} (only 2 is read)")
    if fixed[12] & 0xF not in (LOCAL, PROXY):
        raise Refused(f"unknown PROXY protocol command {fixed[12] & 0xF}")
    return int.from_bytes(fixed[14:16], "big")


def client(header: bytes, peer: Client) -> Client:
    """The client a whole header names, or `peer` for LOCAL and for families without an
    address (UNSPEC, UNIX sockets). TLVs after the addresses are skipped."""
    if header[12] & 0xF == LOCAL:
        return peer
    family, body = header[13] >> 4, header[FIXED:]
    if family == INET and len(body) >= 12:
        return Client(str(ipaddress.IPv4Address(body[0:4])), _port(body[8:10]), True)
    if family == INET6 and len(body) >= 36:
        ip = ipaddress.IPv6Address(body[0:16])
        return Client(str(ip.ipv4_mapped or ip), _port(body[32:34]), True)
    if family in (INET, INET6):
        raise Refused("a PROXY protocol v2 header too short for its addresses")
    return peer


def _port(data: bytes) -> int:
    return int.from_bytes(data, "big")


async def read_async(sock: socket.socket, peer: Client) -> Client:
    """The client of a connection accepted on asyncio's loop (SFTP)."""
    if not trusted_proxy(peer.ip):
        return peer
    loop = asyncio.get_running_loop()

    async def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = await loop.sock_recv(sock, n - len(data))
            if not more:
                raise Refused("the proxy closed the connection inside the PROXY header")
            data += more
        return data

    async def header() -> bytes:
        fixed = await exactly(FIXED)
        return fixed + await exactly(length(fixed))

    try:
        return client(await asyncio.wait_for(header(), TIMEOUT), peer)
    except TimeoutError:
        raise Refused(f"no PROXY protocol v2 header within {TIMEOUT:g} s") from None


def read_blocking(sock: socket.socket, peer: Client) -> Client:
    """The client of a connection accepted by pyftpdlib (FTPS control and data)."""
    if not trusted_proxy(peer.ip):
        return peer
    was = sock.gettimeout()
    sock.settimeout(TIMEOUT)

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = sock.recv(n - len(data))
            if not more:
                raise Refused("the proxy closed the connection inside the PROXY header")
            data += more
        return data

    try:
        fixed = exactly(FIXED)
        return client(fixed + exactly(length(fixed)), peer)
    except TimeoutError:
        raise Refused(f"no PROXY protocol v2 header within {TIMEOUT:g} s") from None
    finally:
        sock.settimeout(was)


def looks_like_header(first: bytes) -> bool:
    """Whether the first bytes a client sent are a PROXY header (v2, or v1's text)."""
    return first.startswith((SIGNATURE[:8], b"PROXY ")) and len(first) >= 6
