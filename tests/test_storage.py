"""Raw uploads kept in S3 (ROSTERDROP_STORAGE_URL) by every way in, against a real
S3-compatible server (moto's server mode): streamed as they arrive, kept once, imported from the
bucket; a cut upload leaves nothing in it. The inbox and retention tests run on both backends
(`s3_fixtures.backend`)."""

import base64
import json
import shutil
import socket
import subprocess
import time

import paramiko
import pytest
import sftp_fixtures
from ftps_fixtures import curl
from sftp_fixtures import DISTRICT_LARGE, ROSTERDROP, sha256

from rosterdrop import process, storage
from rosterdrop.ingest import recovery

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("client", ["sftp", "ftps"])
def test_an_upload_lands_once_in_the_bucket_and_is_imported(make_server, s3, client):
    """OpenSSH sftp or curl's FTPS through `serve`: the zip (over one part, so streamed in two)
    is one object holding the bytes sent, imported from the bucket; no copy stays in the data
    folder."""
    server = make_server(**s3.env)
    if client == "sftp":
        server.openssh(f"put {DISTRICT_LARGE} roster.zip\n")
    else:
        sent = curl(server, DISTRICT_LARGE, implicit=False, name="roster.zip")
        assert sent.returncode == 0, sent.stderr
    server.wait_idle()
    [upload] = server.uploads()
    assert upload["status"] == "imported" and upload["sha256"] == sha256(DISTRICT_LARGE)
    assert s3.objects("inbox/") == [upload["stored_path"]]
    assert s3.read(upload["stored_path"]) == DISTRICT_LARGE.read_bytes()
    assert s3.unfinished() == []
    assert len(s3.objects("roster/")) == 2  # the roster's snapshot, and what it vouches for
    [sync] = server.syncs()
    assert sync["status"] == "applied"
    assert not list((server.data_dir / "inbox").rglob("*"))
    assert not list((server.data_dir / "tmp").rglob("*"))


def test_a_cut_upload_leaves_nothing_in_the_bucket(make_server, s3):
    """A client that dies after two parts were streamed: the multipart upload is aborted, no
    object and no open multipart upload remain."""
    server = make_server(**s3.env)
    pub = server.host_key().split()
    transport = paramiko.Transport(socket.create_connection(("127.0.0.1", server.port), 10))
    transport.connect(
        hostkey=paramiko.Ed25519Key(data=base64.b64decode(pub[1])),
        username="alpha",
        pkey=paramiko.Ed25519Key.from_private_key_file(str(server.key)),
    )
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    f = sftp.open("users.csv", "wb")
    f.write(b"sourcedId,username\n" + b"x" * (2 * storage.PART_SIZE + 1000))
    f.flush()
    server.wait_for(s3.unfinished, 30, "the parts to stream")  # the test means something
    transport.close()  # no SSH_FXP_CLOSE: an aborted transfer
    server.wait_for(lambda: server.audit("upload_aborted"), 30, "the abort")
    deadline = time.monotonic() + 10
    while s3.unfinished() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert s3.unfinished() == [] and s3.objects() == []
    assert server.uploads() == []
    del f


def test_rosterdrop_import_keeps_the_upload_in_the_bucket(tmp_path, s3, migrated_data):
    data = tmp_path / "data"
    shutil.copytree(migrated_data, data)
    env = {**sftp_fixtures.base_env(data), **s3.env}
    run = dict(env=env, capture_output=True, text=True, timeout=300)
    add = [ROSTERDROP, "district", "add", "big", "--name", "Big", "--format", "oneroster-1.1"]
    subprocess.run(add, check=True, **run)
    done = subprocess.run([ROSTERDROP, "import", str(DISTRICT_LARGE), "--district", "big"], **run)
    assert done.returncode == 0, done.stderr
    out = subprocess.run([ROSTERDROP, "sync", "list", "--json"], check=True, **run).stdout
    [sync] = json.loads(out)
    assert sync["status"] == "applied"
    [key] = s3.objects("inbox/")
    assert key.startswith("inbox/big/") and s3.read(key) == DISTRICT_LARGE.read_bytes()
    assert s3.unfinished() == [] and not (data / "inbox").exists()


def test_recovery_aborts_the_multipart_uploads_of_dead_transfers(s3):
    """A transfer killed with its multipart upload open: the next recovery aborts it (S3
    would keep its parts, and bill them, for ever); a live process's upload is left alone."""
    host = process.me().host
    dead = f"inbox/alpha/p999999999s1h{host}~0123456789abcdef"  # no such pid
    live = f"inbox/alpha/{process.me()}~fedcba9876543210"
    for key in (dead, live):
        s3.client.create_multipart_upload(Bucket=s3.bucket, Key=f"{s3.prefix}/{key}")
    recovery.sweep()
    assert s3.unfinished() == [f"{s3.prefix}/{live}"]
