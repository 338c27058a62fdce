"""docs/reference/stack.md section 9, items 8, 18, 19 and 20 (FTPS), and the SFTP rules seen
through FTPS; checked on disk and in the database, not only in the client's replies."""

import contextlib
import ftplib
import hashlib
import io
import socket
import ssl
import time
import warnings

import pytest
from ftps_fixtures import DOTTED, ftp, plain, read_reply, tls_context
from sftp_fixtures import DISTRICT_LARGE, ORGS, PASSWORD, snapshot

pytestmark = pytest.mark.slow


def staging(server) -> list:
    folder = server.data_dir / "sftp-tmp" / "alpha"
    return list(folder.iterdir()) if folder.exists() else []


def test_cut_upload_without_close_notify_is_not_kept(server):  # item 8
    data = DISTRICT_LARGE.read_bytes()
    client = ftp(server)
    for name, part in (("roster.zip", data[: len(data) // 2]), ("users.csv", ORGS.read_bytes())):
        conn = client.transfercmd(f"STOR {name}")
        conn.sendall(part)
        conn.close()  # TCP closed with no TLS close_notify: what a cut connection looks like
        with pytest.raises(ftplib.error_temp, match="426 .*close_notify"):
            client.voidresp()
    client.quit()
    assert len(server.audit("upload_aborted")) == 2
    assert server.uploads() == []
    assert not (server.root() / "roster.zip").exists()
    assert not (server.root() / "users.csv").exists()
    assert staging(server) == []
    inbox = server.data_dir / "inbox" / "alpha"  # made for the copy as the bytes arrived
    assert not inbox.exists() or not list(inbox.iterdir())


def test_cut_zip_closed_cleanly_is_refused_by_content_checks(server):  # item 8
    data = DISTRICT_LARGE.read_bytes()
    client = ftp(server)
    conn = client.transfercmd("STOR roster.zip")
    conn.sendall(data[: len(data) // 2])
    conn.unwrap().close()  # a clean TLS close: FTP cannot know the file is cut
    client.voidresp()
    client.quit()
    server.wait_idle()
    [upload] = server.uploads()
    assert upload["status"] == "failed"
    [sync] = server.syncs()
    assert sync["status"] == "failed"
    assert server.query("select count(*) from roster_user")[0][0] == 0


def test_tls_required_before_login_and_on_data(server):  # item 18
    sock = plain(server)
    assert read_reply(sock).startswith("220")
    for command in (f"USER {DOTTED}", f"PASS {PASSWORD}"):
        sock.sendall(command.encode() + b"\r\n")
        assert read_reply(sock).startswith(("550", "503"))
    for command in ("PBSZ 0", "PROT P"):
        sock.sendall(command.encode() + b"\r\n")
        assert read_reply(sock).startswith("503")
    sock.close()
    assert server.audit("login_ok") == [] and server.audit("login_failed") == []

    client = ftp(server)
    client.prot_c()
    with pytest.raises(ftplib.error_perm, match="550 SSL/TLS required on the data channel"):
        client.storbinary("STOR orgs.csv", io.BytesIO(ORGS.read_bytes()))
    client.prot_p()
    for command in ("PORT 127,0,0,1,4,1", "EPRT |1|127.0.0.1|1025|"):  # no active mode
        with pytest.raises(ftplib.error_perm, match="500"):
            client.sendcmd(command)
    client.quit()
    assert server.uploads() == [] and not (server.root() / "orgs.csv").exists()


@pytest.mark.parametrize("implicit", [False, True])
def test_tls_below_1_2_refused(server, implicit):  # item 18
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="(?i)protocol.version|unsupported.protocol"):
        client = ftp(server, implicit=implicit, login=None, context=old)
        client.auth()
    tls12 = tls_context(server)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    ftp(server, implicit=implicit, context=tls12).quit()


def test_data_connection_from_another_address_refused(server):  # item 18
    client = ftp(server)
    _, port = ftplib.parse227(client.sendcmd("PASV"))
    assert port in server.passive_ports
    thief = socket.socket()
    thief.settimeout(10)
    thief.bind(("127.0.0.2", 0))
    thief.connect(("127.0.0.1", port))
    with pytest.raises(ftplib.error_temp, match="425 Rejected data connection from foreign"):
        client.getresp()
    with contextlib.suppress(ConnectionResetError):
        assert thief.recv(10) == b""  # closed at once
    client.quit()
    assert server.uploads() == []


def test_three_failed_logins_disconnect(server):  # item 18
    client = ftp(server, login=None)
    client.auth()
    start = time.monotonic()
    for i in range(3):
        with pytest.raises(ftplib.error_perm, match="530"):
            client.login(DOTTED, f"wrong-{i}")
    assert time.monotonic() - start >= 3 * 0.2  # the login delay of the test servers
    with pytest.raises((EOFError, OSError)):
        client.login(DOTTED, PASSWORD)
    failed = server.audit("login_failed")
    assert [(e["login"], e["detail"]) for e in failed] == [(DOTTED, "wrong password (ftps)")] * 3
    assert server.audit("login_ok") == []


def test_commands_pipelined_before_auth_tls_never_run(server):  # item 19 (CVE-2011-1575)
    sock = plain(server)
    read_reply(sock)
    sock.sendall(f"AUTH TLS\r\nUSER {DOTTED}\r\nPASS {PASSWORD}\r\nFEAT\r\n".encode())
    assert read_reply(sock).startswith("234")
    tls = tls_context(server).wrap_socket(sock, server_hostname="127.0.0.1")
    tls.sendall(b"NOOP\r\n")
    assert read_reply(tls).startswith("200")  # the first reply is to NOOP: nothing queued
    tls.sendall(b"PWD\r\n")
    assert read_reply(tls).startswith("530")  # the pipelined USER/PASS did not log in
    tls.close()
    assert server.audit("login_ok") == [] and server.audit("login_failed") == []


def test_implicit_tls_first_and_plain_ftp_fails(server):  # item 20
    client = ftp(server, implicit=True)
    assert client.welcome.startswith("220")
    with pytest.raises(ftplib.error_perm, match="503"):
        client.sendcmd("AUTH TLS")
    client.storbinary("STOR orgs.csv", io.BytesIO(ORGS.read_bytes()))
    client.quit()
    [upload] = server.uploads()
    assert (upload["filename"], upload["source"]) == ("orgs.csv", "ftps")
    assert "ftps implicit" in server.audit("login_ok")[0]["detail"]

    sock = plain(server, implicit=True)
    sock.settimeout(2)
    with pytest.raises(TimeoutError):
        sock.recv(100)  # no greeting in clear text
    sock.settimeout(10)
    sock.sendall(f"USER {DOTTED}\r\nPASS {PASSWORD}\r\n".encode())
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    assert b"220" not in data and b"331" not in data and b"230" not in data
    assert len(server.audit("login_ok")) == 1


def test_paths_and_links_confined_as_over_sftp(planted):  # items 1-3, 5 through FTPS
    server, outside = planted
    guarded = [outside, server.data_dir / "sftp" / "beta", server.data_dir / "sftp" / "alpha_evil"]
    before = {k: v for path in guarded for k, v in snapshot(path).items()}
    client = ftp(server)
    escapes = [
        "../outside/secret.txt",
        "/../../outside/secret.txt",
        "//etc/hostname",
        "../alpha_evil/x.csv",
        "../beta/orgs.csv",
        "..\\outside\\secret.txt",
        "a\x00b",
        "dir_link/secret.txt",
        "escape_link",
        "dangling_link",
        "inside_link",
        "loop_a",
        "hard_link",
    ]
    for path in escapes:
        with pytest.raises(ftplib.error_perm, match="550"):
            client.retrbinary(f"RETR {path}", lambda _: None)
        with pytest.raises(ftplib.error_perm, match="550"):
            client.sendcmd(f"DELE {path}")
    for path in ("../../outside/new.csv", "dangling_link", "../alpha_evil/x.csv/y"):
        with pytest.raises(ftplib.error_perm, match="550"):
            client.storbinary(f"STOR {path}", io.BytesIO(b"x"))
    client.storbinary("STOR ../../new.csv", io.BytesIO(b"x"))  # ".." stops at "/"
    with pytest.raises(ftplib.error_perm, match="550"):
        client.rename("new.csv", "../outside/renamed.csv")
    client.rename("/../new.csv", "../../renamed.csv")
    with pytest.raises(ftplib.error_perm, match="550"):
        client.cwd("../outside")
    client.cwd("..")
    assert client.pwd() == "/"
    with pytest.raises(ftplib.error_perm, match="550"):
        client.mkd("sub")
    with pytest.raises(ftplib.error_perm, match="500"):
        client.sendcmd("SITE CHMOD 777 orgs.csv")
    names = client.nlst()
    client.quit()
    assert {k: v for path in guarded for k, v in snapshot(path).items()} == before
    assert (server.root() / "renamed.csv").read_bytes() == b"x"
    assert sorted(names) == ["orgs.csv", "renamed.csv"]  # no links listed
    assert not (server.root() / "sub").exists()


def test_max_file_size(make_server):  # item 10 through FTPS
    server = make_server(ROSTERDROP_SFTP_MAX_FILE_SIZE="100000")
    client = ftp(server)
    with pytest.raises(ftplib.error_perm, match="552 File is larger"):
        try:
            client.storbinary("STOR users.csv", io.BytesIO(b"x" * 200_000))
        except OSError:  # the server cut the data connection before the client finished
            client.getresp()
    client.quit()
    assert server.uploads() == []
    assert not (server.root() / "users.csv").exists()
    assert staging(server) == []


def test_ban_and_allow_list_shared_with_sftp(make_server):  # item 12 across protocols
    server = make_server(ROSTERDROP_DEFENDER_THRESHOLD="3", ROSTERDROP_SFTP_LOGIN_DELAY="0")
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.intake.models import Login;"
        "Login.objects.filter(name='beta').update(allowed_ips='10.0.0.0/8')",
    )
    with pytest.raises(ftplib.error_perm, match="530"):
        ftp(server, login="beta")
    assert "not allowed" in server.audit("login_failed")[0]["detail"]
    client = ftp(server, login=None)
    client.auth()
    for i in range(2):
        with pytest.raises(ftplib.error_perm, match="530"):
            client.login(DOTTED, f"wrong-{i}")
    [ban] = server.query("select * from intake_ban where banned_until is not null")
    assert ban["ban_count"] == 1 and server.audit("ban")
    with pytest.raises((EOFError, OSError)):
        ftp(server)  # the right password, from a banned address
    server.wait_for(lambda: server.audit("login_refused"), what="the refusal audited")
    assert server.openssh("ls\n", check=False).returncode != 0  # SFTP honours the same ban


def test_certificate_fingerprint_printed_and_stable(make_server):
    server = make_server()
    printed = server.output.split("ftps cert: ")[1].split()[0]
    client = ftp(server, implicit=True, login=None)
    served = hashlib.sha256(client.sock.getpeercert(binary_form=True)).hexdigest().upper()
    client.close()
    assert printed == "SHA256:" + ":".join(served[i : i + 2] for i in range(0, 64, 2))
    assert server.cli("ftps-cert").startswith(printed)
    assert printed in server.cli("hostkey")
    server.stop()
    again = make_server(server.data_dir)
    assert again.output.split("ftps cert: ")[1].split()[0] == printed
