"""SIS clients of every age: ed25519, ECDSA (nistp256) and RSA (rsa-sha2-256/512) host keys,
persistent, their fingerprints those `rosterdrop hostkey` prints; OpenSSH limited to one
algorithm connects and uploads; ssh-rsa's SHA-1 signatures are never offered; OpenSSH's scp
(SFTP underneath) uploads and exits 0."""

import subprocess

import pytest
from sftp_fixtures import SCHOOL_SMALL

pytestmark = pytest.mark.slow

ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa")


def keygen_fingerprint(public_key: str) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input=public_key, capture_output=True, text=True
    )
    return out.stdout.split()[1]


def test_every_host_key_connects_and_matches_rosterdrop_hostkey(make_server):
    server = make_server()
    printed = server.cli("hostkey").splitlines()
    for line, algorithm in zip(printed, ALGORITHMS, strict=False):
        assert line.startswith(keygen_fingerprint(server.host_key(algorithm))), line
        assert f"({algorithm}," in line
        if algorithm != "ssh-ed25519":
            assert f"also:     {line.split()[0]} ({algorithm})" in server.output
    known = server.known_hosts.read_text()
    for algorithm in ALGORITHMS:
        known += f"[127.0.0.1]:{server.port} {server.host_key(algorithm)}\n"
    server.known_hosts.write_text(known)

    for algorithm in ("rsa-sha2-256", "rsa-sha2-512", "ecdsa-sha2-nistp256", "ssh-ed25519"):
        name = f"{algorithm}.csv"
        limit = f"HostKeyAlgorithms={algorithm}"
        server.openssh(f'put "{SCHOOL_SMALL / "orgs.csv"}" {name}\n', "alpha", "-o", limit)
        assert (server.root() / name).exists()
    weak = server.openssh("ls\n", "alpha", "-o", "HostKeyAlgorithms=ssh-rsa", check=False)
    assert weak.returncode != 0 and "no matching host key type" in weak.stderr

    # The same keys after a restart.
    server.stop()
    again = make_server(server.data_dir)
    assert again.cli("hostkey").splitlines()[:3] == printed[:3]


def test_scp_uploads_and_exits_zero(make_server):
    server = make_server()
    done = subprocess.run(
        ["scp", "-P", str(server.port), "-i", str(server.key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={server.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", str(SCHOOL_SMALL / "orgs.csv"),
         "alpha@127.0.0.1:orgs.csv"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (server.root() / "orgs.csv").read_bytes() == (SCHOOL_SMALL / "orgs.csv").read_bytes()
