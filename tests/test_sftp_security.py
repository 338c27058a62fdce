"""docs/reference/stack.md section 9, items 1-7 and 9-17, against a real server; checked on disk
and in the DB."""

import asyncio
import json
import os
import socket
import subprocess
import time

import asyncssh
import pytest
from sftp_fixtures import ORGS, PASSWORD, SCHOOL_SMALL, snapshot

pytestmark = pytest.mark.slow


async def expect_error(coro) -> None:
    with pytest.raises((asyncssh.SFTPError, OSError)):
        await coro


def test_traversal_paths_never_leave_the_folder(planted):  # items 1 and 4
    server, outside = planted
    before = snapshot(server.data_dir / "outside") | snapshot(server.data_dir / "sftp" / "beta")
    before |= snapshot(server.data_dir / "sftp" / "alpha_evil")
    escapes = [
        "../outside/secret.txt",
        "/../../outside/secret.txt",
        "../../etc/hostname",
        "//etc/hostname",
        "/etc/hostname",
        "./../alpha_evil/x.csv",
        "../alpha_evil/x.csv",
        "..\\outside\\secret.txt",
        "a\x00b",
        "dir_link/secret.txt",
    ]

    async def go():
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            assert await sftp.realpath("/../..") == "/"
            assert await sftp.realpath("../../x/..") == "/"
            assert await sftp.realpath("./orgs.csv/") == "/orgs.csv"
            for path in escapes:
                await expect_error(sftp.get(path, os.devnull))
                await expect_error(sftp.stat(path))
                await expect_error(sftp.mkdir(path))
                await expect_error(sftp.remove(path))
            # Writes through escaping names land inside the folder or are refused.
            await expect_error(sftp.put(str(ORGS), "../../outside/new.csv"))
            await sftp.put(str(ORGS), "../../new.csv")  # ".." stops at "/"
            await expect_error(sftp.rename("new.csv", "../outside/renamed.csv"))
            await sftp.rename("/../new.csv", "../../renamed.csv")
            await expect_error(sftp.put(str(ORGS), "../alpha_evil/x.csv/y"))
            await expect_error(sftp.mkdir("sub"))
            await expect_error(sftp.rmdir("/"))
            names = set(await sftp.listdir("/"))
            await expect_error(sftp.listdir("../outside"))
            return names

    names = asyncio.run(go())
    after = snapshot(server.data_dir / "outside") | snapshot(server.data_dir / "sftp" / "beta")
    after |= snapshot(server.data_dir / "sftp" / "alpha_evil")
    assert after == before
    assert (server.root() / "renamed.csv").read_bytes() == ORGS.read_bytes()
    assert "secret.txt" not in names and "escape_link" not in names  # links are not listed
    assert "hard_link" not in names and not (server.root() / "sub").exists()


def test_links_refused_at_operation_time(planted):  # items 2 and 3
    server, outside = planted

    async def go():
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            for link in ("escape_link", "dangling_link", "inside_link", "loop_a", "hard_link"):
                await expect_error(sftp.get(link, os.devnull))
                await expect_error(sftp.stat(link))
                await expect_error(sftp.open(link, "wb"))
                await expect_error(sftp.readlink(link))
            await expect_error(sftp.put(str(ORGS), "dangling_link"))
            await expect_error(sftp.listdir("dir_link"))
            await expect_error(sftp.symlink("/etc/passwd", "mylink"))
            await expect_error(sftp.symlink("orgs.csv", "mylink"))
            await expect_error(sftp.link("orgs.csv", "myhardlink"))
            # setstat and friends are accepted and ignored: the mode stays as it was.
            await sftp.chmod("orgs.csv", 0o777)
            await sftp.utime("orgs.csv", (1, 1))
            async with sftp.open("orgs.csv", "rb") as f:
                await f.chmod(0o777)
                assert await f.read(9) == ORGS.read_bytes()[:9]

    mode = os.stat(server.root() / "orgs.csv").st_mode
    asyncio.run(go())
    assert os.stat(server.root() / "orgs.csv").st_mode == mode
    assert os.stat(server.root() / "orgs.csv").st_mtime > 1000
    assert not (outside / "missing.txt").exists()
    assert (outside / "secret.txt").read_text() == "SECRET"
    assert not os.path.lexists(server.root() / "mylink")
    assert not os.path.lexists(server.root() / "myhardlink")
    assert server.uploads() == []


def test_district_isolation(server):  # item 5
    async def go():
        async with server.connect("alpha") as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(ORGS), "orgs.csv")
        async with server.connect("beta") as conn, conn.start_sftp_client() as sftp:
            assert "orgs.csv" not in await sftp.listdir("/")
            for path in (
                "../alpha/orgs.csv",
                "/../alpha/orgs.csv",
                "../ALPHA/orgs.csv",
                "../Alpha/orgs.csv",
                "../ａｌｐｈａ/orgs.csv",
                "../alpha/ORGS.CSV",
                "／../alpha/orgs.csv",
                "．．/alpha/orgs.csv",
            ):
                await expect_error(sftp.get(path, os.devnull))
            await expect_error(sftp.put(str(SCHOOL_SMALL / "users.csv"), "../alpha/orgs.csv"))
            await sftp.put(str(SCHOOL_SMALL / "users.csv"), "../../orgs.csv")  # lands in beta
            await expect_error(sftp.remove("../alpha/orgs.csv"))

    asyncio.run(go())
    server.wait_idle()
    assert (server.root("alpha") / "orgs.csv").read_bytes() == ORGS.read_bytes()
    assert os.listdir(server.root("alpha")) == ["orgs.csv"]
    assert os.listdir(server.root("beta")) == ["orgs.csv"]
    rows = server.query(
        "select d.slug, u.login from inbox_upload u join districts_district d "
        "on d.id = u.district_id order by u.id"
    )
    assert [tuple(r) for r in rows] == [("alpha", "alpha"), ("beta", "beta")]


def test_aborted_upload_leaves_nothing(server):  # item 6
    async def go():
        conn = await server.connect()
        sftp = await conn.start_sftp_client()
        f = await sftp.open("users.csv", "wb")
        await f.write(b"x" * 100_000)
        conn.abort()
        await asyncio.sleep(1)

    asyncio.run(go())
    server.wait_for(lambda: server.audit("upload_aborted"), 10, "the abort to be audited")
    assert server.uploads() == []
    assert not (server.root() / "users.csv").exists()
    assert not list((server.data_dir / "sftp-tmp" / "alpha").iterdir())
    assert not (server.data_dir / "inbox" / "alpha").exists() or not list(
        (server.data_dir / "inbox" / "alpha").iterdir()
    )


def test_clean_close_is_exactly_one_upload(server):  # item 7
    server.openssh(f"put {ORGS}\n")
    [upload] = server.uploads()
    assert upload["filename"] == "orgs.csv" and upload["size"] == ORGS.stat().st_size
    assert len(server.audit("upload")) == 1


def test_concurrent_same_name_uploads_last_writer_wins(server):  # item 9
    a, b = b"A" * 300_000, b"B" * 200_000

    async def go():
        async with (
            server.connect() as conn,
            conn.start_sftp_client() as s1,
            conn.start_sftp_client() as s2,
        ):
            f1 = await s1.open("users.csv", "wb")
            f2 = await s2.open("users.csv", "wb")
            for i in range(0, 300_000, 50_000):
                await f1.write(a[i : i + 50_000], i)
                if i < 200_000:
                    await f2.write(b[i : i + 50_000], i)
            await f1.close()
            await f2.close()

    asyncio.run(go())
    assert (server.root() / "users.csv").read_bytes() == b
    stored = [(server.data_dir / u["stored_path"]).read_bytes() for u in server.uploads()]
    assert stored == [a, b]


def test_max_file_size(make_server, tmp_path):  # item 10
    server = make_server(ROSTERDROP_SFTP_MAX_FILE_SIZE="100000")
    big = tmp_path / "users.csv"
    big.write_bytes(b"x" * 200_000)
    result = server.openssh(f"put {big}\n", check=False)
    assert result.returncode != 0
    assert server.uploads() == []
    assert not (server.root() / "users.csv").exists()
    assert not list((server.data_dir / "sftp-tmp" / "alpha").iterdir())


class WrongPasswords(asyncssh.SSHClient):
    def __init__(self):
        self.tries = 0

    def password_auth_requested(self):
        self.tries += 1
        return f"wrong-{self.tries}" if self.tries < 50 else None


def try_passwords(server, login="alpha"):
    client = WrongPasswords()

    async def go():
        with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied, OSError)):
            await server.connect(
                login, client_factory=lambda: client, client_keys=None, preferred_auth="password"
            )

    asyncio.run(go())
    return client.tries


def password_login(server, login="alpha", password=PASSWORD):
    async def go():
        async with server.connect(
            login, password=password, client_keys=None, preferred_auth="password"
        ) as conn:
            return await conn.start_sftp_client() is not None

    return asyncio.run(go())


def test_max_auth_tries_and_delay(make_server, tmp_path):  # items 11 and 12 (delay)
    server = make_server(
        ROSTERDROP_SFTP_MAX_AUTH_TRIES="3",
        ROSTERDROP_SFTP_LOGIN_DELAY="0.5",
        ROSTERDROP_DEFENDER_THRESHOLD="1000",
    )
    start = time.monotonic()
    assert try_passwords(server) == 3
    assert time.monotonic() - start >= 3 * 0.5
    assert len(server.audit("login_failed")) == 3
    # Wrong keys count too.
    keys = []
    for i in range(4):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / f"k{i}")],
            check=True,
        )
        keys.append(str(tmp_path / f"k{i}"))

    async def wrong_keys():
        with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied)):
            await server.connect(client_keys=keys, password=None)

    asyncio.run(wrong_keys())
    assert len(server.audit("login_failed")) == 6
    # A good key is queried, then signed: neither counts as a failure.
    server.openssh("ls\n")
    # The audit row is written after the session has begun: `ls` may return first (under load).
    server.wait_for(lambda: server.audit("login_ok"), timeout=30, what="the login_ok audit row")
    assert len(server.audit("login_failed")) == 6


# A banned address is closed as it connects, before the SSH version exchange: the client sees
# the connection closed or reset.
BANNED = (asyncssh.DisconnectError, asyncssh.PermissionDenied, ConnectionError)


def test_defender_bans_expires_and_escalates(make_server):  # item 12
    server = make_server(
        ROSTERDROP_SFTP_MAX_AUTH_TRIES="10",
        ROSTERDROP_DEFENDER_THRESHOLD="3",
        ROSTERDROP_DEFENDER_BAN_SECONDS="2",
        ROSTERDROP_SFTP_LOGIN_DELAY="0",
    )
    assert try_passwords(server) == 3
    [ban] = server.query("select * from intake_ban")
    assert ban["ban_count"] == 1
    assert server.audit("ban")
    with pytest.raises(BANNED):
        password_login(server)
    assert server.audit("login_refused")
    time.sleep(2.5)
    assert password_login(server)
    assert try_passwords(server) == 3
    [ban2] = server.query("select * from intake_ban")
    assert ban2["ban_count"] == 2
    first = 2.0
    # Second ban is 50 % longer: still banned after the first ban's length.
    time.sleep(first + 0.3)
    with pytest.raises(BANNED):
        password_login(server)


def test_operator_lifts_a_ban(make_server):  # item 12
    """A district locked out by its own misconfigured job need not wait out the ban."""
    server = make_server(
        ROSTERDROP_SFTP_MAX_AUTH_TRIES="10",
        ROSTERDROP_DEFENDER_THRESHOLD="3",
        ROSTERDROP_SFTP_LOGIN_DELAY="0",
    )
    try_passwords(server)
    with pytest.raises(BANNED):
        password_login(server)
    [listed] = json.loads(server.cli("defender", "list", "--banned", "--json"))
    assert listed["ip"] == "127.0.0.1" and listed["bans"] == 1 and listed["banned_until"]
    assert "ban lifted" in server.cli("defender", "unban", "127.0.0.1")
    assert password_login(server)
    assert server.query("select * from intake_ban where banned_until is not null") == []
    assert server.audit("admin")[-1]["detail"] == "defender ban lifted (cli)"
    assert "No IP" in server.cli("defender", "list", "--banned")


def test_safelisted_ip_is_never_banned(make_server):  # item 12
    server = make_server(
        ROSTERDROP_DEFENDER_THRESHOLD="2",
        ROSTERDROP_SFTP_LOGIN_DELAY="0",
        ROSTERDROP_DEFENDER_SAFELIST="127.0.0.0/8",
    )
    for _ in range(3):
        try_passwords(server)
    assert server.query("select * from intake_ban where banned_until is not null") == []
    assert password_login(server)


def test_unknown_login_and_ip_allow_list(server):
    try_passwords(server, "nobody")
    assert server.audit("login_failed")[0]["detail"].startswith("unknown login")
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.intake.models import Login;"
        "Login.objects.filter(name='beta').update(allowed_ips='10.0.0.0/8')",
    )
    with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied)):
        password_login(server, "beta")
    assert any("not allowed" in e["detail"] for e in server.audit("login_failed"))


def test_login_timeout_and_connection_caps(make_server):  # item 13
    server = make_server(
        ROSTERDROP_SFTP_LOGIN_TIMEOUT="2", ROSTERDROP_SFTP_MAX_CONNECTIONS_PER_IP="2"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"SSH-2.0-idle\r\n")
    start = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert 1.5 <= time.monotonic() - start < 8
    sock.close()

    async def caps():
        async with server.connect(), server.connect():
            with pytest.raises((asyncssh.DisconnectError, OSError)):
                async with server.connect():
                    pass
        # Slots are given back when connections close.
        async with server.connect():
            pass

    asyncio.run(caps())
    assert server.audit("connection_refused")


def test_session_and_handle_caps(make_server):  # item 14
    server = make_server(ROSTERDROP_SFTP_MAX_SESSIONS="1", ROSTERDROP_SFTP_MAX_OPEN_HANDLES="2")

    async def go():
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            with pytest.raises((asyncssh.SFTPError, asyncssh.ChannelOpenError, OSError)):
                async with conn.start_sftp_client() as second:
                    await second.listdir("/")
            f1 = await sftp.open("a.csv", "wb")
            f2 = await sftp.open("b.csv", "wb")
            with pytest.raises(asyncssh.SFTPFailure):
                await sftp.open("c.csv", "wb")
            await f1.close()
            f3 = await sftp.open("c.csv", "wb")
            await f2.close()
            await f3.close()

    asyncio.run(go())


def test_exec_shell_forwarding_scp_refused(server, tmp_path):  # item 15
    async def go():
        async with server.connect() as conn:
            with pytest.raises((asyncssh.ChannelOpenError, OSError)):
                await conn.run("id")
            with pytest.raises((asyncssh.ChannelOpenError, OSError)):
                await conn.create_session(asyncssh.SSHClientSession, subsystem="shell-ish")
            with pytest.raises((asyncssh.ChannelOpenError, OSError)):
                await conn.open_connection("127.0.0.1", server.web_port)
            with pytest.raises((asyncssh.ChannelListenError, OSError)):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9)

    asyncio.run(go())
    ssh = [
        "ssh",
        "-p",
        str(server.port),
        "-i",
        str(server.key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
    ]
    assert (
        subprocess.run([*ssh, "alpha@127.0.0.1", "id"], capture_output=True, timeout=30).returncode
        != 0
    )
    assert (
        subprocess.run(
            [*ssh, "-tt", "alpha@127.0.0.1"], input=b"", capture_output=True, timeout=30
        ).returncode
        != 0
    )
    scp = [
        "scp",
        "-O",
        "-P",
        str(server.port),
        "-i",
        str(server.key),
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={server.known_hosts}",
        str(ORGS),
        "alpha@127.0.0.1:x.csv",
    ]
    assert subprocess.run(scp, capture_output=True, timeout=30).returncode != 0
    assert server.uploads() == []


def test_algorithm_policy(server):  # item 16
    verbose = server.openssh("ls\n", "alpha", "-vvv")
    assert "will use strict KEX ordering" in verbose.stderr
    assert "kex-strict-s-v00@openssh.com" in verbose.stderr
    for options in (
        ["Ciphers=aes128-cbc"],
        ["KexAlgorithms=diffie-hellman-group14-sha1"],
        ["Ciphers=aes128-ctr", "MACs=hmac-sha1"],
        ["Ciphers=aes256-ctr", "MACs=hmac-sha1-etm@openssh.com"],
        ["HostKeyAlgorithms=ssh-rsa"],
    ):
        extra = [arg for option in options for arg in ("-o", option)]
        assert server.openssh("ls\n", "alpha", *extra, check=False).returncode != 0, options


def test_host_key_is_stable_across_restart(make_server):  # item 17
    server = make_server()
    printed = server.output.split("host key: ")[1].split()[0]
    keygen = subprocess.run(
        ["ssh-keygen", "-lf", str(server.known_hosts)], capture_output=True, text=True, check=True
    ).stdout
    assert printed in keygen
    assert server.cli("hostkey").startswith(printed)
    server.stop()
    again = make_server(server.data_dir)
    assert again.output.split("host key: ")[1].split()[0] == printed
    again.openssh("ls\n")  # the pinned known_hosts still matches
