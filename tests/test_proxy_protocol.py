"""PROXY protocol v2 in front of SFTP and FTPS, and X-Forwarded-For on the web side: the
district's address is believed only from ROSTERDROP_TRUSTED_PROXIES, and is then what the
defender, allow lists and audit log use. A hand-written header sender on loopback here;
real HAProxy in tests/test_load_balancer.py."""

import asyncio
import ipaddress
import socket
import struct

import pytest
from django.test import RequestFactory
from hypothesis import given
from hypothesis import strategies as st
from sftp_fixtures import ORGS, Server

from rosterdrop.intake import proxy_protocol
from rosterdrop.intake.proxy_protocol import SIGNATURE, Client, Refused
from rosterdrop.ops.proxies import ForwardedForMiddleware, client_address

PEER = Client("127.0.0.1", 50000, False)


def v2_header(src: str, src_port: int, command: int = 0x1, tlv: bytes = b"") -> bytes:
    """A PROXY v2 header as HAProxy's send-proxy-v2 writes it (TCP over IPv4 or IPv6)."""
    ip = ipaddress.ip_address(src)
    if ip.version == 4:
        addresses = ip.packed + bytes([127, 0, 0, 1]) + struct.pack("!HH", src_port, 2222)
        family = 0x11
    else:
        addresses = ip.packed + bytes(15) + b"\x01" + struct.pack("!HH", src_port, 2222)
        family = 0x21
    body = addresses + tlv
    return SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def parse(header: bytes) -> Client:
    return proxy_protocol.client(
        header[:16] + header[16 : 16 + proxy_protocol.length(header)], PEER
    )


def test_headers_name_the_client_or_keep_the_connections_own():
    assert parse(v2_header("203.0.113.7", 4242)) == Client("203.0.113.7", 4242, True)
    assert parse(v2_header("2001:db8::7", 4242)) == Client("2001:db8::7", 4242, True)
    assert parse(v2_header("::ffff:198.51.100.9", 1)).ip == "198.51.100.9"
    tlv = b"\x04\x00\x03abc"  # a TLV after the addresses (HAProxy's unique id and such)
    assert parse(v2_header("203.0.113.7", 4242, tlv=tlv)).ip == "203.0.113.7"
    assert parse(v2_header("203.0.113.7", 4242, command=0x0)) == PEER  # LOCAL: health check
    unspec = SIGNATURE + b"\x21\x00\x00\x00"
    assert parse(unspec) == PEER


@pytest.mark.parametrize(
    "header, why",
    [
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 4242 2222\r\n", "v1"),
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", "no PROXY protocol v2 header"),
        (SIGNATURE + b"\x10\x11\x00\x0c" + bytes(12), "version 1"),
        (SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "unknown PROXY protocol command 2"),
        (SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "too short"),
    ],
)
def test_what_is_not_a_v2_header_is_refused(header, why):
    with pytest.raises(Refused, match=why):
        parse(header)


@given(st.binary(min_size=16, max_size=300))
def test_any_bytes_give_a_client_or_a_refusal(data):
    try:
        found = parse(data)
    except Refused:
        return
    assert found == PEER or found.proxied


@pytest.mark.parametrize(
    "remote, forwarded, client",
    [
        ("10.0.0.5", "198.51.100.9", "198.51.100.9"),  # through the balancer
        ("10.0.0.5", "1.2.3.4, 198.51.100.9", "198.51.100.9"),  # a client's own XFF ignored
        ("10.0.0.5", "198.51.100.9, 10.0.0.6", "198.51.100.9"),  # two trusted hops
        ("10.0.0.5", "not-an-ip", "10.0.0.5"),
        ("192.0.2.1", "198.51.100.9", "192.0.2.1"),  # not from a trusted proxy: REMOTE_ADDR
    ],
)
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(settings, remote, forwarded, client):
    settings.TRUSTED_PROXIES = "10.0.0.0/24"
    assert client_address(remote, forwarded) == client
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    ForwardedForMiddleware(lambda r: r)(request)
    assert request.META["REMOTE_ADDR"] == client


def connect_from(server: Server, port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset, when it closed with our bytes
    unread, is a close too)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def upload_over(server: Server, sock: socket.socket, name: str) -> None:
    sock.setblocking(False)
    async with server.connect(sock=sock) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(ORGS), name)


@pytest.mark.slow
def test_sftp_and_ftps_behind_a_trusted_proxy_see_the_districts_address(make_server):
    server = make_server(ROSTERDROP_TRUSTED_PROXIES="127.0.0.1")

    # A header from the trusted proxy: the district's address is the one audited and kept.
    sock = connect_from(server, server.port)
    sock.sendall(v2_header("203.0.113.7", 4242))
    asyncio.run(upload_over(server, sock, "proxied.csv"))
    server.wait_for(lambda: server.audit("upload"), what="the upload")
    assert [r["ip"] for r in server.audit("login_ok")] == ["203.0.113.7"]
    assert [u["source_ip"] for u in server.uploads()] == ["203.0.113.7"]

    # LOCAL (the balancer's health check): the connection's own address, then SSH as usual.
    sock = connect_from(server, server.port)
    sock.sendall(v2_header("203.0.113.7", 4242, command=0x0))
    assert sock.recv(64).startswith(b"SSH-2.0-rosterdrop")
    sock.close()

    # From the trusted proxy without a header (the spec: never guess): closed unanswered.
    for first in (b"SSH-2.0-OpenSSH_9.2p1\r\n", b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2\r\n"):
        sock = connect_from(server, server.port)
        sock.sendall(first)
        assert read_all(sock) == b""
    sock = connect_from(server, server.ftps_port)
    sock.sendall(b"AUTH TLS\r\n")
    assert read_all(sock) == b""

    def refused() -> list[str]:
        return [r["detail"] for r in server.audit("connection_refused")]

    server.wait_for(lambda: len(refused()) == 3, what="three refusals audited")
    why = "(sftp; ROSTERDROP_TRUSTED_PROXIES)"
    assert f"no PROXY protocol v2 header from a trusted proxy {why}" in refused()
    assert any(d.startswith("a PROXY protocol v1 header") for d in refused())
    assert "no PROXY protocol v2 header within 5 s (ftps; ROSTERDROP_TRUSTED_PROXIES)" in refused()

    # From any other address a header is refused: SFTP's version exchange fails on it, FTPS
    # closes the connection; nobody logs in as 203.0.113.7.
    sock = connect_from(server, server.port, "127.0.0.2")
    sock.sendall(v2_header("203.0.113.7", 4242) + b"SSH-2.0-OpenSSH_9.2p1\r\n")
    assert read_all(sock).startswith(b"SSH-2.0-rosterdrop")  # then closed, nothing more
    sock = connect_from(server, server.ftps_port, "127.0.0.2")
    assert sock.recv(1024).startswith(b"220 ")
    sock.sendall(v2_header("203.0.113.7", 4242))
    assert read_all(sock) == b""
    server.wait_for(lambda: any("untrusted" in d for d in refused()), what="its refusal")
    assert [r["ip"] for r in server.audit("login_ok")] == ["203.0.113.7"]
