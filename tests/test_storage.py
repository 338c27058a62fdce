"""Raw uploads kept in S3 (ROSTERDROP_STORAGE_URL) by every way in, against a real
S3-compatible server (moto's server mode): streamed as they arrive, kept once, imported from the
bucket; a cut upload leaves nothing in it. The inbox and retention tests run on both backends
(`s3_fixtures.backend`)."""

import base64
import socket
import time

import paramiko
import pytest
import s3_fixtures
import sftp_fixtures
from sftp_fixtures import DISTRICT_LARGE, sha256

from rosterdrop.inbox import storage

make_server, sftp_template = sftp_fixtures.make_server, sftp_fixtures.sftp_template
moto_endpoint, s3 = s3_fixtures.moto_endpoint, s3_fixtures.s3

pytestmark = pytest.mark.slow


def test_an_sftp_upload_lands_once_in_the_bucket_and_is_imported(make_server, s3):
    """OpenSSH sftp through `serve`: the zip (over one part, so streamed in two) is one object
    holding the bytes sent, imported from the bucket; no copy stays in the data folder."""
    server = make_server(**s3.env)
    server.openssh(f"put {DISTRICT_LARGE} roster.zip\n")
    server.wait_idle()
    [upload] = server.uploads()
    assert upload["status"] == "imported" and upload["sha256"] == sha256(DISTRICT_LARGE)
    assert s3.objects() == [upload["stored_path"]]
    assert s3.read(upload["stored_path"]) == DISTRICT_LARGE.read_bytes()
    assert s3.unfinished() == []
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
