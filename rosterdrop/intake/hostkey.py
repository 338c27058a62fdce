"""The deployment's SSH host keys: ed25519 first, then ECDSA (nistp256) and RSA (3072 bits)
for older SIS exporters (Java/JSch, libssh2) that know no ed25519. Each is made once, kept in
the data folder beside the first, and shown as SHA256:; RSA signs only with SHA-2
(rsa-sha2-256/512), never with ssh-rsa's SHA-1."""

import os
from pathlib import Path

import asyncssh
from django.conf import settings

# Algorithm -> file name part. The first is the one clients pinned before there were others:
# its file is settings.SFTP_HOST_KEY.
KINDS = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa", "ssh-rsa": "rsa"}
RSA_BITS = 3072
# What the server offers to sign with, in its order of preference.
HOST_KEY_ALGS = (b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"rsa-sha2-512", b"rsa-sha2-256")


def host_key_path(algorithm: str = "ssh-ed25519") -> Path:
    first = Path(settings.SFTP_HOST_KEY)
    if algorithm == "ssh-ed25519":
        return first
    return first.with_name(f"ssh_host_{KINDS[algorithm]}_key")


def key_files() -> list[Path]:
    """Every host key file and its .pub (for backups)."""
    return [p for a in KINDS for p in (host_key_path(a), _pub(host_key_path(a)))]


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def load_or_create(algorithm: str = "ssh-ed25519") -> asyncssh.SSHKey:
    """Clients pin the fingerprint, so the key must survive restarts: create it only once."""
    path = host_key_path(algorithm)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if algorithm == "ssh-rsa":
            key = asyncssh.generate_private_key(algorithm, key_size=RSA_BITS)
        else:
            key = asyncssh.generate_private_key(algorithm)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
        os.replace(tmp, path)
        _pub(path).write_bytes(key.export_public_key())
    return asyncssh.read_private_key(str(path))


def load_all() -> list[asyncssh.SSHKey]:
    return [load_or_create(algorithm) for algorithm in KINDS]


def fingerprint(key: asyncssh.SSHKey | None = None) -> str:
    """The OpenSSH `ssh-keygen -l` form, e.g. SHA256:0B+sJCIa50lEhqAat+9FwO/CroG63F7kwajFlsF5ss4."""
    return (key or load_or_create()).get_fingerprint("sha256")


def fingerprints() -> list[tuple[str, str]]:
    """(algorithm, SHA256 fingerprint) of every host key, the first one first."""
    return [(key.get_algorithm(), fingerprint(key)) for key in load_all()]
