"""The transfer layer against a real `rosterdrop serve`: a cut upload is never an upload, no
write makes a hole, the district quota holds, and the connection limits treat districts fairly.

paramiko drives what the everyday clients never do on purpose (end of file or a disconnect with
the file still open, a write far past the end); OpenSSH sftp, curl and lftp show that what they
really do (sequential writes, `reput` resumes) keeps working.
"""

import asyncio
import base64
import socket
import struct
import subprocess
import time

import asyncssh
import paramiko
import pytest
from ftps_fixtures import curl, lftp
from sftp_fixtures import ORGS, PASSWORD, sha256

pytestmark = pytest.mark.slow


def staging(server) -> list[str]:
    return [p.name for p in (server.data_dir / "sftp-tmp" / "alpha").iterdir()]


def inbox(server) -> list[str]:
    folder = server.data_dir / "inbox" / "alpha"
    return [p.name for p in folder.iterdir()] if folder.exists() else []


def paramiko_sftp(server, login: str = "alpha") -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    """A paramiko client with key auth and the server's host key pinned."""
    pub = server.host_key().split()
    host_key = paramiko.Ed25519Key(data=base64.b64decode(pub[1]))
    transport = paramiko.Transport(socket.create_connection(("127.0.0.1", server.port), 10))
    key = paramiko.Ed25519Key.from_private_key_file(str(server.key))
    transport.connect(hostkey=host_key, username=login, pkey=key)
    return transport, paramiko.SFTPClient.from_transport(transport)


def write_part(sftp: paramiko.SFTPClient, name: str = "users.csv") -> paramiko.SFTPFile:
    """Open `name` and write 100 kB of a users file, each write answered, the handle left open."""
    f = sftp.open(name, "wb")
    f.set_pipelined(False)
    f.write(ORGS.read_bytes() * 20)
    f.flush()
    return f


def assert_nothing_kept(server, why: str) -> None:
    [aborted] = server.wait_for(lambda: server.audit("upload_aborted"), 10, "the abort record")
    assert why in aborted["detail"] and "bytes received" in aborted["detail"]
    time.sleep(0.5)  # anything the worker would have picked up
    assert server.uploads() == [] and server.syncs() == []
    assert not (server.root() / "users.csv").exists()
    assert staging(server) == [] and inbox(server) == []
    assert server.audit("upload") == []


def test_end_of_file_with_the_handle_open_is_no_upload(server):
    transport, sftp = paramiko_sftp(server)
    f = write_part(sftp)  # kept: paramiko closes a file it garbage-collects
    sftp.get_channel().shutdown_write()  # SSH_MSG_CHANNEL_EOF, no SSH_FXP_CLOSE
    try:
        assert_nothing_kept(server, "end of file")
    finally:
        transport.close()
        del f


def test_disconnect_with_the_handle_open_is_no_upload(server):
    transport, sftp = paramiko_sftp(server)
    f = write_part(sftp)
    transport.close()
    assert_nothing_kept(server, "connection")
    del f


@pytest.mark.parametrize(
    "garbage",
    [struct.pack(">I", 1 << 30), struct.pack(">I", 1) + b"\x04"],
    ids=["too long", "too short"],
)
def test_a_malformed_request_with_the_handle_open_is_no_upload(server, garbage):
    """A request longer than any allowed, or too short to be one, ends the session: the file
    still open is an aborted transfer, as with end of file."""
    transport, sftp = paramiko_sftp(server)
    f = write_part(sftp)
    sftp.get_channel().sendall(garbage)
    try:
        assert_nothing_kept(server, "malformed request")
    finally:
        transport.close()
        del f


def test_paramiko_clean_close_is_one_upload(server):
    transport, sftp = paramiko_sftp(server)
    write_part(sftp, "orgs.csv").close()
    transport.close()
    [upload] = server.uploads()
    assert upload["filename"] == "orgs.csv" and upload["size"] == 20 * ORGS.stat().st_size
    assert server.audit("upload_aborted") == []


def test_write_past_the_end_is_refused_and_nothing_is_kept(server):
    transport, sftp = paramiko_sftp(server)
    try:
        f = sftp.open("users.csv", "wb")
        f.set_pipelined(False)
        f.write(b"sourcedId\n")
        f.flush()
        f.seek(1 << 30)
        with pytest.raises(OSError, match="past the end"):
            f.write(b"0123456789")
            f.flush()
        # The temp file never grew past what arrived in order.
        [temp] = staging(server)
        assert (server.data_dir / "sftp-tmp" / "alpha" / temp).stat().st_blocks * 512 < 1 << 20
        f.close()  # a failed transfer closed cleanly is still no upload
    finally:
        transport.close()
    assert_nothing_kept(server, "past the end")


def test_resumes_of_real_clients_keep_working(server, tmp_path):
    """Resumes write on from the end of what arrived: OpenSSH `reput` (append flag), curl -C -
    over SFTP, lftp `put -c` over FTPS (REST, then STOR)."""
    full = tmp_path / "full.csv"
    full.write_bytes(ORGS.read_bytes() * 50)
    half = tmp_path / "half.csv"
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    server.openssh(
        f"put {half} orgs.csv.filepart\nreput {full} orgs.csv.filepart\n"
        "rename orgs.csv.filepart orgs.csv\n"
    )
    server.openssh(f"put {half} users.csv.filepart\n")
    digest = server.curl_host_key()
    subprocess.run(
        ["curl", "-sS", "--fail", "--max-time", "30", "-C", "-", "-T", str(full),
         "--hostpubsha256", digest, "--user", f"alpha:{PASSWORD}",
         f"sftp://127.0.0.1:{server.port}/users.csv.filepart"],
        check=True, timeout=60,
    )  # fmt: skip
    assert (server.root() / "users.csv.filepart").read_bytes() == full.read_bytes()
    resumed = lftp(server, f"put {half} -o a.csv.part; put -c {full} -o a.csv.part", False)
    assert resumed.returncode == 0, resumed.stderr
    assert (server.root() / "a.csv.part").read_bytes() == full.read_bytes()
    [upload] = server.uploads()
    assert upload["filename"] == "orgs.csv" and upload["sha256"] == sha256(full)
    assert server.audit("upload_aborted") == []


def big_file(tmp_path, name: str, size: int, fill: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(fill * size)
    return str(path)


def test_district_quota_refuses_an_upload_as_it_arrives(make_server, tmp_path):
    server = make_server(ROSTERDROP_DISTRICT_QUOTA_BYTES="300000")
    first = big_file(tmp_path, "one.csv", 200_000, b"a")
    server.openssh(f"put {first}\n")
    second = big_file(tmp_path, "two.csv", 200_000, b"b")
    # OpenSSH's sftp shows only the status ("Failure"); clients that show the server's
    # message (paramiko, WinSCP) say why.
    result = server.openssh(f"put {second}\n", check=False)
    assert result.returncode != 0 and "failure" in result.stderr.lower()
    transport, sftp = paramiko_sftp(server)
    f = sftp.open("three.csv", "wb")
    f.set_pipelined(False)  # paramiko's put() pipelines writes and keeps their errors quiet
    with pytest.raises(OSError, match="Storage quota exceeded"):
        f.write(b"c" * 200_000)
        f.flush()
    with pytest.raises(OSError, match="Storage quota exceeded.*not kept"):
        sftp._request(paramiko.sftp.CMD_CLOSE, f.handle)  # f.close() hides the reply
    transport.close()
    assert [u["filename"] for u in server.uploads()] == ["one.csv"]
    aborted = server.audit("upload_aborted")
    assert len(aborted) == 2 and {a["login"] for a in aborted} == {"alpha"}
    assert all("quota" in a["detail"].lower() for a in aborted)
    assert staging(server) == [] and not (server.root() / "two.csv").exists()

    # beta's own setting is stricter than the default, over FTPS too.
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.districts.models import District;"
        "District.objects.filter(slug='beta').update(upload_quota_bytes=100000)",
    )
    refused = curl(server, tmp_path / "two.csv", implicit=False, name="two.csv", login="beta")
    # 552 (exceeded storage allocation), which curl reports as its exit code 70; lftp shows
    # the server's sentence.
    assert refused.returncode == 70 and "storage allocation" in refused.stderr
    told = lftp(server, f"put {tmp_path / 'two.csv'}", implicit=True, login="beta")
    assert told.returncode != 0 and "Storage quota exceeded" in told.stderr
    assert [u["filename"] for u in server.uploads()] == ["one.csv"]
    assert all("quota" in a["detail"].lower() for a in server.audit("upload_aborted")[2:])
    assert {a["login"] for a in server.audit("upload_aborted")[2:]} == {"beta"}
    assert not list((server.data_dir / "sftp-tmp" / "beta").iterdir())


def test_global_connection_cap_scores_no_defender_points(make_server):
    """Another client holding every slot must not get a retrying district banned."""
    server = make_server(
        ROSTERDROP_SFTP_MAX_CONNECTIONS="1",
        ROSTERDROP_DEFENDER_THRESHOLD="3",
        ROSTERDROP_SFTP_LOGIN_DELAY="0",
    )

    async def go():
        async with server.connect():
            for _ in range(3):
                with pytest.raises((asyncssh.DisconnectError, OSError)):
                    async with server.connect():
                        pass
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            return await sftp.listdir("/")

    assert asyncio.run(go()) is not None
    assert len(server.audit("connection_refused")) == 3
    assert server.audit("ban") == []
    assert server.query("select * from intake_ban where banned_until is not null") == []


def ban_loopback(server) -> None:
    """Ban 127.0.0.1 for an hour, as the defender would after repeated failures."""
    server.cli(
        "shell",
        "-c",
        "from datetime import timedelta; from django.utils import timezone;"
        "from rosterdrop.intake.models import Ban;"
        "Ban.objects.create(ip='127.0.0.1', window_start=timezone.now(),"
        " banned_until=timezone.now() + timedelta(hours=1), ban_count=1)",
    )


def test_banned_address_is_closed_before_the_ssh_version_and_ftps_greeting(make_server):
    server = make_server()
    ban_loopback(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        assert sock.recv(256) == b""  # closed: no "SSH-2.0-" banner, no key exchange
    # FTPS alike: no greeting on the explicit port, no TLS handshake on the implicit one.
    for port in (server.ftps_port, server.ftps_implicit_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(256) == b""
    # FTPS audits a refusal where it accepts in the writing thread (intake/writer.py): soon after.
    server.wait_for(lambda: len(server.audit("login_refused")) == 3, what="three refusals")
    refused = server.audit("login_refused")
    assert [r["detail"] for r in refused] == ["IP is banned"] * 3


def test_banned_ftps_connections_leave_nothing_running(make_server):
    """A refused FTPS connection gets no thread of its own: one used to be started for the
    closed handler, and when the next connection took the same descriptor number it served
    that connection's socket forever, so a graceful stop waited its whole grace."""
    server = make_server(ROSTERDROP_SHUTDOWN_SECONDS="300")  # far beyond a loaded stop
    ban_loopback(server)
    for _ in range(10):
        for port in (server.ftps_port, server.ftps_implicit_port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                assert sock.recv(256) == b""
    start = time.monotonic()
    server.stop()  # waits 60 s at the most
    assert time.monotonic() - start < 45


def test_idle_session_is_closed_and_a_busy_one_is_not(make_server):
    server = make_server(ROSTERDROP_SFTP_IDLE_TIMEOUT="2")

    async def busy():
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            for _ in range(8):  # 4 s of listings, never 2 s apart
                await sftp.listdir("/")
                await asyncio.sleep(0.5)
            return True

    async def idle():
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            await sftp.listdir("/")
            start = time.monotonic()
            await conn.wait_closed()
            return time.monotonic() - start

    assert asyncio.run(busy())
    assert 1.5 <= asyncio.run(asyncio.wait_for(idle(), 20)) < 5
