"""Receiving a file into the inbox: the bytes kept are the bytes sent, under their sha256."""

import errno
import hashlib
import os
import sqlite3
import threading
import time

import pytest
from django.conf import settings

from rosterdrop import storage
from rosterdrop.inbox import store

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_received_file_is_kept_byte_for_byte_with_its_sha256(
    district, tmp_path, monkeypatch, kernel_copy
):
    data = os.urandom(100_003)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    monkeypatch.setattr(storage, "WRITEBACK_WINDOW", 4096)  # 25 windows, the last one short
    if not kernel_copy:  # as between file systems that cannot copy in the kernel

        def refuse(*args, **kwargs):
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    upload = store.receive(district, "users.csv", source, "cli")
    kept = store.stored_file(upload)
    assert kept.read_bytes() == data
    assert upload.size == len(data)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()


def test_empty_file_is_received(district, tmp_path, backend):
    source = tmp_path / "orgs.csv"
    source.write_bytes(b"")
    upload = store.receive(district, "orgs.csv", source, "cli")
    assert upload.size == 0 and store.open_stored(upload).read() == b""
    assert upload.sha256 == hashlib.sha256(b"").hexdigest()


def test_a_failed_copy_leaves_nothing_behind(district, tmp_path, monkeypatch):
    source = tmp_path / "users.csv"
    source.write_bytes(b"x" * 10_000)

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "disk error")

    monkeypatch.setattr(os, "copy_file_range", broken)
    folder = store.inbox_dir(district)
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    with pytest.raises(OSError, match="disk error"):
        store.receive(district, "users.csv", source, "cli")
    assert set(folder.iterdir()) == before  # no temporary copy left (.incoming-*)
    assert not district.uploads.exists()


def test_the_same_bytes_received_again_share_one_file(district, tmp_path, settings):
    """A nightly export that did not change costs no disk; each upload keeps its own name,
    so that retention can delete the first and leave the second whole."""
    from datetime import timedelta

    from django.utils import timezone

    from rosterdrop.inbox import retention

    source = tmp_path / "district.zip"
    source.write_bytes(os.urandom(50_000))
    first = store.receive(district, "district.zip", source, "sftp")
    again = store.receive(district, "district.zip", source, "sftp")
    source.write_bytes(os.urandom(50_000))
    other = store.receive(district, "district.zip", source, "sftp")
    paths = [store.stored_file(u) for u in (first, again, other)]
    assert paths[0] != paths[1]
    assert paths[0].stat().st_ino == paths[1].stat().st_ino and paths[1].stat().st_nlink == 2
    assert paths[2].stat().st_ino != paths[0].stat().st_ino and paths[2].stat().st_nlink == 1
    assert not list(store.inbox_dir(district).glob(".incoming-*"))
    first.status = again.status = "imported"
    first.save()
    again.save()
    settings.UPLOAD_RETENTION_DAYS = 1
    type(first).objects.filter(pk=first.pk).update(received_at=timezone.now() - timedelta(days=2))
    assert [p.upload.pk for p in retention.purge()] == [first.pk]
    assert not paths[0].exists()
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == again.sha256


def test_quota_counts_each_content_kept_once(district, tmp_path, settings, backend):
    """The same bytes received again share one file on disk, so they count once; uploads
    retention purged count no more."""
    settings.DISTRICT_QUOTA_BYTES = 10_000
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"a" * 1000)
    b.write_bytes(b"b" * 3000)
    first = store.receive(district, "users.csv", a, "cli")
    store.receive(district, "users.csv", a, "cli")
    store.receive(district, "orgs.csv", b, "cli")
    assert store.stored_bytes(district) == 4000
    assert store.quota_room(district) == 6000
    district.upload_quota_bytes = 3500
    assert store.quota_room(district) == 0  # over: no room, never negative
    first.purged_at = first.received_at
    first.save()
    assert store.stored_bytes(district) == 4000  # the second copy of a.csv is still kept


@pytest.mark.parametrize("size", [10, storage.PART_SIZE + 10])  # one PUT; two parts
def test_a_hash_given_by_the_sender_is_checked_against_the_copy(district, tmp_path, backend, size):
    source = tmp_path / "users.csv"
    source.write_bytes(b"sourcedId\n" + b"x" * (size - 10))
    with pytest.raises(OSError, match="changed while it was being stored"):
        store.receive(district, "users.csv", source, "sftp", sha256="0" * 64)
    assert not list(store.inbox_dir(district).glob(".incoming-*"))
    assert not district.uploads.exists()
    if backend:  # no object, and no multipart upload left open
        assert backend.objects() == [] and backend.unfinished() == []
    right = hashlib.sha256(source.read_bytes()).hexdigest()
    kept = store.receive(district, "users.csv", source, "sftp", sha256=right)
    assert kept.sha256 == right and store.open_stored(kept).read() == source.read_bytes()


def test_a_transfer_hands_its_file_to_the_disk_as_it_arrives(district, tmp_path, monkeypatch):
    """In the data folder each full window of a transfer's file starts its writeback as it
    arrives (a window written again starts it again), so that the fsync the client waits for
    at the close has only the last window left; aborted, it leaves no descriptor open."""
    monkeypatch.setattr(storage, "WRITEBACK_WINDOW", 1 << 20)
    path = tmp_path / "upload"
    fds = len(os.listdir("/proc/self/fd"))
    with open(path, "wb", buffering=0) as f:
        incoming = store.incoming(district, path)
        assert isinstance(incoming, storage._InPlace)
        f.write(os.urandom(5 << 19))  # 2.5 windows
        incoming.arrived(5 << 19)
        assert incoming.written_back == 2 << 20
        incoming.rewritten(3 << 19)  # into the second window
        assert incoming.written_back == 1 << 20
        incoming.arrived(5 << 19)
        assert incoming.written_back == 2 << 20
        incoming.abort()
    assert len(os.listdir("/proc/self/fd")) == fds


def test_the_inbox_takes_a_transfers_own_file(district, tmp_path):
    """In the data folder a kept transfer's file is the upload's file (another name of it, no
    copy), under the hash of the bytes as they arrived; one rewritten as it arrived is hashed
    from the file; a transfer not kept leaves nothing in the inbox."""
    inbox = store.inbox_dir(district)
    for rewrite in (False, True):
        data = bytearray(os.urandom(5 << 15))
        path = tmp_path / f"upload-{rewrite}"
        with open(path, "wb", buffering=0) as f:
            incoming = store.incoming(district, path)
            f.write(data)
            incoming.arrived(len(data))
            if rewrite:
                data[10:20] = b"x" * 10
                f.seek(10)
                f.write(data[10:20])
                incoming.rewritten(10)
        sha = hashlib.sha256(data).hexdigest()
        upload = store.receive(
            district, "users.csv", path, "sftp", sha256=None if rewrite else sha, sent=incoming
        )
        incoming.abort()
        kept = store.stored_file(upload)
        assert kept.stat().st_ino == path.stat().st_ino and kept.stat().st_nlink == 2
        assert kept.read_bytes() == data and upload.sha256 == sha
        assert not list(inbox.glob(".incoming-*"))

    before = set(inbox.iterdir())
    path = tmp_path / "cut"
    path.write_bytes(os.urandom(3 << 16))
    incoming = store.incoming(district, path)
    incoming.arrived(3 << 16)
    incoming.abort()
    assert set(inbox.iterdir()) == before and path.stat().st_nlink == 1


@pytest.mark.django_db(transaction=True)
def test_a_file_received_while_an_import_holds_the_write_lock_is_kept(district, tmp_path):
    """SQLite has one writer: an import holds the write lock from its apply to its commit, a
    minute or more for a big district. Every connection waits for it up to
    SQLITE_WRITE_WAIT_SECONDS (it waited 30 s, and a file received meanwhile was refused,
    "please retry", though its bytes were durable). A file received during a (short) hold is
    kept once it ends."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL locks rows: an import never holds a receive up")
    assert settings.SQLITE_WRITE_WAIT_SECONDS >= 600
    with connection.cursor() as cur:
        cur.execute("PRAGMA busy_timeout")
        assert cur.fetchone()[0] == settings.SQLITE_WRITE_WAIT_SECONDS * 1000
    source = tmp_path / "users.csv"
    source.write_bytes(b"sourcedId,username\n1,a\n")
    importing = sqlite3.connect(
        connection.settings_dict["NAME"], isolation_level=None, check_same_thread=False
    )
    importing.execute("BEGIN IMMEDIATE")
    released = threading.Timer(3, importing.execute, ["COMMIT"])
    released.start()
    began = time.monotonic()
    try:
        upload = store.receive(district, "users.csv", source, "sftp")
    finally:
        released.join()
        importing.close()
    assert time.monotonic() - began >= 2.5  # it waited for the import's commit
    assert store.stored_file(upload).read_bytes() == source.read_bytes()
    assert list(district.uploads.values_list("filename", flat=True)) == ["users.csv"]
