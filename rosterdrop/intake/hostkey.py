"""The deployment's SSH host keys: ed25519 first, then ECDSA (nistp256) and RSA (3072 bits)
for older SIS exporters (Java/JSch, libssh2) that know no ed25519. Each is made once and kept in
the database (`ServerKey`), so that every front end on it presents the same keys, and shown as
SHA256:; RSA signs only with SHA-2 (rsa-sha2-256/512), never with ssh-rsa's SHA-1.

An install from before keys were shared kept them in the data folder: the first start on the
database imports those files, so districts keep the fingerprints they pinned."""

from pathlib import Path

import asyncssh
from django.conf import settings

from rosterdrop.intake.models import ServerKey

# Algorithm -> file name part. The first is the one clients pinned before there were others:
# its file was settings.SFTP_HOST_KEY.
KINDS = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa", "ssh-rsa": "rsa"}
RSA_BITS = 3072
# What the server offers to sign with, in its order of preference.
HOST_KEY_ALGS = (b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"rsa-sha2-512", b"rsa-sha2-256")


def host_key_path(algorithm: str = "ssh-ed25519") -> Path:
    """Where a data folder kept the key before the database did (imported from there)."""
    first = Path(settings.SFTP_HOST_KEY)
    if algorithm == "ssh-ed25519":
        return first
    return first.with_name(f"ssh_host_{KINDS[algorithm]}_key")


def _made(algorithm: str) -> ServerKey:
    """The data folder's key if this install has one, else a new key."""
    path = host_key_path(algorithm)
    if path.exists():
        key = asyncssh.read_private_key(str(path))
        source = str(path)
    elif algorithm == "ssh-rsa":
        key, source = asyncssh.generate_private_key(algorithm, key_size=RSA_BITS), ""
    else:
        key, source = asyncssh.generate_private_key(algorithm), ""
    return ServerKey(
        name=algorithm,
        private_key=key.export_private_key().decode(),
        public_key=key.export_public_key().decode().strip(),
        imported_from=source,
    )


def stored(algorithm: str = "ssh-ed25519") -> ServerKey:
    """Clients pin the fingerprint, so the key outlives restarts and is the same on every
    front end: made (or imported) only once, by whichever front end comes first."""
    return ServerKey.first_kept(algorithm, lambda: _made(algorithm))


def load_or_create(algorithm: str = "ssh-ed25519") -> asyncssh.SSHKey:
    return asyncssh.import_private_key(stored(algorithm).private_key)


def load_all() -> list[asyncssh.SSHKey]:
    return [load_or_create(algorithm) for algorithm in KINDS]


def fingerprint(key: asyncssh.SSHKey | None = None) -> str:
    """The OpenSSH `ssh-keygen -l` form, e.g. SHA256:0B+sJCIa50lEhqAat+9FwO/CroG63F7kwajFlsF5ss4."""
    return (key or load_or_create()).get_fingerprint("sha256")


def fingerprints() -> list[tuple[str, str]]:
    """(algorithm, SHA256 fingerprint) of every host key, the first one first."""
    return [(key.get_algorithm(), fingerprint(key)) for key in load_all()]


def public_keys() -> list[str]:
    """Every host key as an OpenSSH public key line (for a district's known_hosts)."""
    return [stored(algorithm).public_key for algorithm in KINDS]
