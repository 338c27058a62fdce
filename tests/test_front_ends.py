"""Several front ends on one database present the same SSH host keys and FTPS certificate
(made once, by whichever comes first; an older data folder's keys imported, so districts keep
the fingerprints they pinned) and share the defender's bans."""

import asyncio
import hashlib
import ssl
import subprocess
import threading

import asyncssh
import psycopg
import pytest
from cryptography import x509
from sftp_fixtures import ROSTERDROP, Server, base_env

from rosterdrop.intake import hostkey, tlscert
from rosterdrop.intake.models import ServerKey


@pytest.mark.django_db
def test_an_older_data_folders_keys_are_imported_once(settings, tmp_path):
    """An install from before the database kept keys: its ed25519 key and self-signed FTPS
    certificate are the ones served; keys it did not have are made."""
    old = asyncssh.generate_private_key("ssh-ed25519")
    hostkey.host_key_path().parent.mkdir(parents=True, exist_ok=True)
    hostkey.host_key_path().write_bytes(old.export_private_key())
    cert_path, key_path = tlscert.data_folder_files()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", "/CN=old", "-keyout", str(key_path), "-out", str(cert_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    old_cert = x509.load_pem_x509_certificate(cert_path.read_bytes())

    assert hostkey.fingerprint() == old.get_fingerprint("sha256")
    assert tlscert.fingerprint() == tlscert.fingerprint(old_cert)
    printed = hostkey.fingerprints()
    kept = {k.name: k.imported_from for k in ServerKey.objects.all()}
    assert kept == {
        "ssh-ed25519": str(hostkey.host_key_path()),
        "ecdsa-sha2-nistp256": "",
        "ssh-rsa": "",
        "ftps": str(cert_path),
    }
    # From now on the database is what counts: the files may go.
    hostkey.host_key_path().unlink()
    cert_path.unlink()
    assert hostkey.fingerprints() == printed
    assert tlscert.fingerprint() == tlscert.fingerprint(old_cert)


@pytest.mark.slow
def test_front_ends_starting_together_keep_one_set_of_keys(postgres_database, tmp_path):
    """Four `rosterdrop hostkey` at once on one empty database, each with its own data
    folder: one insert of each key wins, the others read it, all print the same."""
    url, _ = postgres_database
    env = {**base_env(tmp_path / "first"), "ROSTERDROP_DATABASE_URL": url}
    subprocess.run([ROSTERDROP, "migrate", "-v0"], env=env, check=True, timeout=120)
    procs = [
        subprocess.Popen(
            [ROSTERDROP, "hostkey"],
            env={**env, "ROSTERDROP_DATA_DIR": str(tmp_path / f"front{i}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    printed = {out for out, _ in outputs}
    assert len(printed) == 1
    assert len(next(iter(printed)).splitlines()) == 4  # three host keys and the certificate


def keyscan(server: Server) -> set[str]:
    """The host keys a front end presents, as OpenSSH's ssh-keyscan sees them."""
    out = subprocess.run(
        ["ssh-keyscan", "-T", "30", "-p", str(server.port), "-t", "ed25519,ecdsa,rsa", "127.0.0.1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return {" ".join(line.split()[1:3]) for line in out.stdout.splitlines()}


def ftps_certificate(server: Server) -> str:
    """The SHA256 of the certificate a front end's implicit FTPS port presents."""
    pem = ssl.get_server_certificate(("127.0.0.1", server.ftps_implicit_port), timeout=10)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def start_together(servers: list[Server]) -> None:
    threads = [threading.Thread(target=s.start) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s.proc is not None for s in servers), "a front end did not start"


async def unknown_login(server: Server) -> None:
    with pytest.raises(asyncssh.DisconnectError):  # refused, or banned and cut off
        await asyncssh.connect(
            "127.0.0.1", server.port, username="nobody", password="guess",
            known_hosts=None, agent_path=None, client_keys=None, connect_timeout=10,
        )  # fmt: skip


async def refused_before_version(server: Server) -> bytes:
    """What a banned address gets: the connection closed before the SSH version."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


@pytest.mark.slow
def test_two_front_ends_on_one_database_show_one_host_key_and_share_bans(
    make_server, postgres_database, tmp_path
):
    url, _ = postgres_database
    env = {
        "ROSTERDROP_DATABASE_URL": url,
        "ROSTERDROP_DEFENDER_THRESHOLD": "2",  # one unknown login (2 points) bans
    }
    first = make_server(args=("--no-worker",), **env)  # migrates; the second starts beside it
    second = make_server(args=("--no-worker",), **env)
    # Every data folder came from one template, whose SQLite held keys of its own: the
    # database both share is the only thing that can make them agree.
    keys = keyscan(first)
    assert len(keys) == 3
    assert keyscan(second) == keys
    printed = first.cli("hostkey")
    assert second.cli("hostkey") == printed
    assert set(first.cli("hostkey", "--public").splitlines()) == keys
    cert = ftps_certificate(first)
    assert ftps_certificate(second) == cert
    assert cert.upper() in printed.replace(":", "")

    # After restarting both (at the same time), still the same.
    first.stop()
    second.stop()
    start_together([first, second])
    assert keyscan(first) == keyscan(second) == keys
    assert ftps_certificate(first) == ftps_certificate(second) == cert

    # A ban earned on one front end refuses the address on the other.
    asyncio.run(unknown_login(first))
    assert asyncio.run(refused_before_version(second)) == b""
    ftps = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--ssl-reqd", "-k",
         f"ftp://127.0.0.1:{second.ftps_port}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ftps.returncode != 0
    with psycopg.connect(url) as db:
        refused = db.execute(
            "select host(ip), detail from audit_auditevent where kind = 'login_refused'"
        ).fetchall()
    assert ("127.0.0.1", "IP is banned") in refused
