"""Uploads over SFTP with real clients, through to the sync: the district's everyday path."""

import asyncio
import base64
import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import threading
import time

import asyncssh
import pytest
from asyncssh.packet import Byte, String, UInt32, UInt64
from sftp_fixtures import DISTRICT_LARGE, ORGS, PASSWORD, SCHOOL_SMALL, assert_zip_imported

pytestmark = pytest.mark.slow


def test_openssh_zip_upload_with_put_p_is_imported(server, tmp_path):
    zip_path = tmp_path / "roster.zip"
    shutil.copy(DISTRICT_LARGE, zip_path)
    result = server.openssh(f"put -p {zip_path}\nls -l\n")
    assert "roster.zip" in result.stdout
    server.wait_idle()

    assert_zip_imported(server, "sftp", "alpha")
    listed = server.sync_list()
    assert listed[0]["status"] == "applied"


def test_curl_loose_files_make_one_sync_after_quiet_period(server):
    # One curl for all seven files (its -T {a,b,...} glob, one connection), as an SIS sends
    # them, and a quiet period of 5 s: on a loaded machine more than the fixture's 1 s could
    # pass between two files, and rightly make two syncs.
    server.query("update districts_district set quiet_period_seconds = 5")
    files = "{" + ",".join(str(f) for f in sorted(SCHOOL_SMALL.iterdir())) + "}"
    subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "60",
            "-T",
            files,
            "--hostpubsha256",
            server.curl_host_key(),
            "--user",
            f"alpha:{PASSWORD}",
            f"sftp://127.0.0.1:{server.port}/",
        ],
        check=True,
        timeout=90,
    )
    server.wait_idle()
    uploads = server.uploads()
    assert sorted(u["filename"] for u in uploads) == sorted(f.name for f in SCHOOL_SMALL.iterdir())
    assert {u["status"] for u in uploads} == {"imported"}
    [sync] = server.syncs()
    assert sync["status"] == "applied"
    linked = server.query("select count(*) from ingest_sync_uploads where sync_id = ?", sync["id"])
    assert linked[0][0] == len(uploads)


def test_curl_refuses_wrong_host_key(server):
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-T",
            str(SCHOOL_SMALL / "orgs.csv"),
            "--hostpubsha256",
            base64.b64encode(b"x" * 32).decode().rstrip("="),
            "--user",
            f"alpha:{PASSWORD}",
            f"sftp://127.0.0.1:{server.port}/",
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert server.uploads() == []


@pytest.mark.parametrize("temp_name", ["roster.zip.filepart", ".roster.zip.tmp"])
def test_temp_then_rename_imports_once_under_final_name(server, tmp_path, temp_name):
    zip_path = tmp_path / "roster.zip"
    shutil.copy(DISTRICT_LARGE, zip_path)
    server.openssh(f"put {zip_path} {temp_name}\nrename {temp_name} roster.zip\n")
    server.wait_idle()
    [upload] = server.uploads()
    assert upload["filename"] == "roster.zip"
    assert upload["status"] == "imported"
    assert len(server.syncs()) == 1
    assert sorted(p.name for p in server.root().iterdir()) == ["roster.zip"]


def test_sftp_v3_rename_over_existing_file_from_winscp_temp(server):
    """WinSCP renames name.filepart over an existing name with a plain SSH_FXP_RENAME."""

    async def go():
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            for _ in range(2):
                await sftp.put(str(SCHOOL_SMALL / "orgs.csv"), "orgs.csv.filepart")
                await sftp.rename("orgs.csv.filepart", "orgs.csv")

    asyncio.run(go())
    server.wait_idle()
    uploads = server.uploads()
    assert [u["filename"] for u in uploads] == ["orgs.csv", "orgs.csv"]
    assert sorted(p.name for p in server.root().iterdir()) == ["orgs.csv"]


def test_same_bytes_again_is_a_no_change_sync(server, tmp_path):
    zip_path = tmp_path / "roster.zip"
    shutil.copy(DISTRICT_LARGE, zip_path)
    server.openssh(f"put {zip_path}\n")
    server.wait_idle()
    server.openssh(f"put {zip_path}\n")
    server.wait_idle()
    statuses = [s["status"] for s in server.syncs()]
    assert statuses == ["applied", "no_changes"]
    assert [u["status"] for u in server.uploads()] == ["imported", "imported"]


def test_unmatched_file_is_recorded_with_reason(server, tmp_path):
    odd = tmp_path / "Users.CSV"
    odd.write_text("sourcedId\n1\n")
    server.openssh(f"put {odd}\n")
    server.wait_idle()
    [upload] = server.uploads()
    assert upload["status"] == "unmatched"
    assert "case-sensitive" in upload["outcome"] and "users.csv" in upload["outcome"]
    assert server.syncs() == []


def test_kill_9_between_upload_and_import_imports_exactly_once(make_server, tmp_path):
    server = make_server()
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.districts.models import District;"
        "District.objects.filter(slug='alpha').update(paused=True)",
    )
    zip_path = tmp_path / "roster.zip"
    shutil.copy(DISTRICT_LARGE, zip_path)
    server.openssh(f"put {zip_path}\n")
    assert [u["status"] for u in server.uploads()] == ["received"]
    server.stop(kill=True)
    assert server.syncs() == []

    server.cli(
        "shell",
        "-c",
        "from rosterdrop.districts.models import District;"
        "District.objects.filter(slug='alpha').update(paused=False)",
    )
    again = make_server(server.data_dir)
    again.wait_idle()
    assert [u["status"] for u in again.uploads()] == ["imported"]
    assert [s["status"] for s in again.syncs()] == ["applied"]
    again.stop()
    third = make_server(server.data_dir)
    time.sleep(2)
    assert len(third.syncs()) == 1


class _RawSFTP(asyncssh.SSHClientSession):
    """The client end of an SFTP channel, SFTP messages written by hand: what the server
    sends arrives one SSH data message per call of data_received."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.buffer = b""
        self.arrived = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.messages.append(data)
        self.buffer += data
        self.arrived.set()

    async def replies(self, count: int) -> list[bytes]:
        """The next `count` replies, each its type byte on."""
        replies: list[bytes] = []
        while len(replies) < count:
            if len(self.buffer) >= 4 and len(self.buffer) >= 4 + (
                size := int.from_bytes(self.buffer[:4], "big")
            ):
                replies.append(self.buffer[4 : 4 + size])
                self.buffer = self.buffer[4 + size :]
                continue
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 30)
        return replies


def _sftp(kind: int, *fields: bytes) -> bytes:
    payload = Byte(kind) + b"".join(fields)
    return UInt32(len(payload)) + payload


def test_write_replies_go_out_together(server):
    """The replies to write requests that arrived together go out together (sftp._Replies):
    64 writes sent at once are answered in fewer SSH data messages than writes, each OK."""
    blocks = [random.randbytes(16384) for _ in range(64)]

    async def go() -> tuple[list[bytes], int]:
        async with server.connect() as conn:
            chan, sftp = await conn.create_session(_RawSFTP, subsystem="sftp", encoding=None)
            chan.write(_sftp(1, UInt32(3)))  # SSH_FXP_INIT
            await sftp.replies(1)
            flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
            chan.write(_sftp(3, UInt32(1), String("big.bin"), UInt32(flags), UInt32(0)))
            (handle,) = await sftp.replies(1)
            assert handle[0] == 102  # SSH_FXP_HANDLE
            handle = handle[9:]
            before = len(sftp.messages)
            chan.write(
                b"".join(
                    _sftp(6, UInt32(2 + n), String(handle), UInt64(n * 16384), String(block))
                    for n, block in enumerate(blocks)
                )
            )
            statuses = await sftp.replies(len(blocks))
            messages = len(sftp.messages) - before
            chan.write(_sftp(4, UInt32(99), String(handle)))  # SSH_FXP_CLOSE
            await sftp.replies(1)
            chan.close()
            assert {status[:1] + status[5:9] for status in statuses} == {Byte(101) + UInt32(0)}
            return statuses, messages

    statuses, messages = asyncio.run(go())
    assert len(statuses) == 64
    assert messages < 32, messages
    assert (server.root() / "big.bin").read_bytes() == b"".join(blocks)


def test_an_upload_is_one_file_in_its_folder_and_its_inbox(server):
    """The inbox takes the transfer's own file: the upload in the folder and in the inbox are
    one file on disk (no copy), which the folder lists, serves and resumes from as any other;
    a hard link planted in the folder to another district's upload is still refused."""
    data = SCHOOL_SMALL.joinpath("orgs.csv").read_bytes()

    async def go():
        async with server.connect("beta") as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(SCHOOL_SMALL / "users.csv"), "users.csv")
        async with server.connect() as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(SCHOOL_SMALL / "orgs.csv"), "orgs.csv")
            beta, alpha = server.uploads()
            shown = (server.root() / "orgs.csv").stat()
            stored = (server.data_dir / alpha["stored_path"]).stat()
            assert (shown.st_ino, shown.st_nlink) == (stored.st_ino, 2)
            os.link(server.data_dir / beta["stored_path"], server.root() / "planted.csv")
            assert sorted(await sftp.listdir("/")) == [".", "..", "orgs.csv"]
            assert (await sftp.stat("orgs.csv")).size == len(data)
            async with sftp.open("orgs.csv", "rb") as f:
                assert await f.read() == data
            async with sftp.open("orgs.csv", "ab") as f:  # a resume starts from the file
                await f.write(b"")
            for call in (sftp.stat, sftp.remove):
                with pytest.raises(asyncssh.SFTPError):
                    await call("planted.csv")
            with pytest.raises(asyncssh.SFTPError):
                await sftp.get("planted.csv", os.devnull)

    asyncio.run(go())
    server.wait_idle()
    kept = [u for u in server.uploads() if u["filename"] == "orgs.csv"]
    assert [u["sha256"] for u in kept] == [hashlib.sha256(data).hexdigest()] * 2
    assert (server.root() / "planted.csv").exists()  # refused, not deleted


def test_districts_log_in_and_upload_while_an_import_holds_the_write_lock(server):
    """On SQLite an import holds the one write lock from its apply to its commit, a minute or
    more for a large district. Meanwhile one district uploads (its login's audit row and its
    upload wait for the lock) and another only lists its folder: that one must not wait
    behind the first one's writes (the reads and the writes each have a thread of their own,
    intake/writer.py), and the first one's file is kept once the import commits."""
    hold = 20.0
    importing = sqlite3.connect(
        server.data_dir / "rosterdrop.sqlite3", isolation_level=None, check_same_thread=False
    )
    importing.execute("BEGIN IMMEDIATE")
    began = time.monotonic()
    released = threading.Timer(hold, importing.execute, ["COMMIT"])
    released.start()
    put: dict[str, subprocess.CompletedProcess] = {}
    uploading = threading.Thread(
        target=lambda: put.setdefault("alpha", server.openssh(f"put {ORGS}\n", check=False))
    )
    try:
        uploading.start()
        time.sleep(3)  # alpha has logged in: its audit row waits for the lock
        listed = server.openssh("ls\n", "beta", check=False)  # ConnectTimeout=10
        listed_after = time.monotonic() - began
        uploading.join(timeout=hold + 60)
    finally:
        released.join()
        importing.close()
    assert listed.returncode == 0, listed.stderr
    assert listed_after < hold - 2, "beta waited for the import"
    assert put["alpha"].returncode == 0, put["alpha"].stderr
    server.wait_for(lambda: len(server.audit("login_ok")) == 2, what="both logins audited")
    assert [u["filename"] for u in server.uploads()] == ["orgs.csv"]
    assert "database is locked" not in "".join(server.log)
