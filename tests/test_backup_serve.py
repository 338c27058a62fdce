"""`rosterdrop backup` of a real, running `rosterdrop serve` (its own SQLite data folder, so
this file runs once, not again on PostgreSQL: tests/test_backup.py covers both engines)."""

import subprocess
import zipfile

import pytest
from sftp_fixtures import ROSTERDROP, SCHOOL_SMALL, Server, sha256


@pytest.mark.slow
def test_backup_of_a_running_serve_during_an_upload_restores_a_working_deployment(
    make_server, tmp_path
):
    """A real `rosterdrop serve`: one district imported, then `rosterdrop backup` runs while
    an SFTP upload arrives. The restored data folder holds every upload its database names,
    byte for byte, the same host key, and serves again."""
    server = make_server()
    first = tmp_path / "roster.zip"
    with zipfile.ZipFile(first, "w") as z:
        for path in sorted(SCHOOL_SMALL.iterdir()):
            z.write(path, path.name)
    server.openssh(f"put {first}\n")
    server.wait_idle()
    [applied] = server.syncs()
    second = tmp_path / "later.zip"
    second.write_bytes(first.read_bytes())

    dest = tmp_path / "backup"
    backup = subprocess.Popen(
        [ROSTERDROP, "backup", str(dest)], env=server.env, stdout=subprocess.PIPE, text=True
    )
    server.openssh(f"put {second}\n")
    assert backup.wait(120) == 0
    server.stop()

    restored = tmp_path / "restored"  # a new machine: an empty data folder
    env = {**server.env, "ROSTERDROP_DATA_DIR": str(restored)}
    out = subprocess.run(
        [ROSTERDROP, "restore", str(dest)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    again = Server(restored, server.key, {})
    assert applied in again.syncs()
    for upload in again.uploads():
        if upload["stored_path"]:  # not one the backup caught while it was being received
            assert sha256(restored / upload["stored_path"]) == upload["sha256"] == sha256(first)
    assert again.host_key() == server.host_key()  # the host keys travel in the database
    again.start()
    try:
        again.wait_idle()  # an upload the backup caught waiting is imported now
        assert applied in again.syncs()
        # The client pinned the key of the first server (its known_hosts), and connects.
        again.known_hosts.write_text(
            server.known_hosts.read_text().replace(f"]:{server.port} ", f"]:{again.port} ")
        )
        assert "roster.zip" in again.openssh("ls\n").stdout
    finally:
        again.stop()
