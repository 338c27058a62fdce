"""Per-login permissions (SFTPGo's per-user permissions) on a real serve: an upload-only
login uploads over SFTP (OpenSSH) and FTPS (ftplib) but may not list, download or delete its
folder's files; given them back, it may."""

import ftplib
import io
import json

import pytest
from ftps_fixtures import ftp
from sftp_fixtures import SCHOOL_SMALL

pytestmark = pytest.mark.slow


def set_permissions(server, permissions: list[str]) -> None:
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.intake.models import Login; "
        f"Login.objects.update(permissions={json.dumps(permissions)})",
    )


def test_an_upload_only_login_uploads_and_nothing_else(server):
    orgs = SCHOOL_SMALL / "orgs.csv"
    server.openssh(f'put "{orgs}" kept.csv\n')  # while it may still do everything
    set_permissions(server, [])
    server.openssh(f'put "{orgs}" new.csv\n')
    for command in ("ls", "get kept.csv /dev/null", "rm kept.csv"):
        done = server.openssh(command + "\n", check=False)
        assert "Permission denied" in done.stderr, (command, done.stderr)
    assert {p.name for p in server.root().iterdir()} >= {"kept.csv", "new.csv"}

    client = ftp(server)
    client.storbinary("STOR ftps.csv", io.BytesIO(orgs.read_bytes()))
    for refused in (
        lambda: client.nlst(),
        lambda: client.retrbinary("RETR kept.csv", lambda _: None),
        lambda: client.delete("kept.csv"),
    ):
        with pytest.raises(ftplib.error_perm, match="^550"):
            refused()
    client.quit()

    set_permissions(server, ["list", "download", "delete"])
    listing = server.openssh("ls -1\nrm kept.csv\n")
    assert "new.csv" in listing.stdout
    client = ftp(server)
    assert "ftps.csv" in client.nlst()
    client.quit()
