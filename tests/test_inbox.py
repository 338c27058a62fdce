"""Receiving a file into the inbox: the bytes kept are the bytes sent, under their sha256."""

import errno
import hashlib
import os

import pytest

from rosterdrop.inbox import store

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_received_file_is_kept_byte_for_byte_with_its_sha256(
    district, tmp_path, monkeypatch, kernel_copy
):
    data = os.urandom(100_003)
    source = tmp_path / "users.csv"
    source.write_bytes(data)
    monkeypatch.setattr(store, "WRITEBACK_WINDOW", 4096)  # 25 windows, the last one short
    if not kernel_copy:  # as between file systems that cannot copy in the kernel

        def refuse(*args, **kwargs):
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    upload = store.receive(district, "users.csv", source, "cli")
    kept = store.stored_file(upload)
    assert kept.read_bytes() == data
    assert upload.size == len(data)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()


def test_empty_file_is_received(district, tmp_path):
    source = tmp_path / "orgs.csv"
    source.write_bytes(b"")
    upload = store.receive(district, "orgs.csv", source, "cli")
    assert upload.size == 0 and store.stored_file(upload).read_bytes() == b""
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
