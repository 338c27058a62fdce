"""The deployment's one SSH host key: made once, kept in the data folder, shown as SHA256:."""

import os
from pathlib import Path

import asyncssh
from django.conf import settings


def host_key_path() -> Path:
    return Path(settings.SFTP_HOST_KEY)


def load_or_create() -> asyncssh.SSHKey:
    """Clients pin the fingerprint, so the key must survive restarts: create it only once."""
    path = host_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
        os.replace(tmp, path)
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    return asyncssh.read_private_key(str(path))


def fingerprint(key: asyncssh.SSHKey | None = None) -> str:
    """The OpenSSH `ssh-keygen -l` form, e.g. SHA256:0B+sJCIa50lEhqAat+9FwO/CroG63F7kwajFlsF5ss4."""
    return (key or load_or_create()).get_fingerprint("sha256")
