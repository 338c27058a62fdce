"""Where raw uploads, and what every host must share, are kept: the data folder (the default) or
an S3-compatible bucket (ROSTERDROP_STORAGE_URL=s3://bucket/prefix, through boto3 and its own
AWS_* settings), so that every front end and worker of a deployment stores, reads and deletes the
same bytes. Below every app (pyproject's layers): the inbox keeps uploads in it, the roster its
snapshots, the ingest its kept lines.

A key is a path relative to the data folder (`inbox/SLUG/NAME`), the same under both backends;
it is what `Upload.stored_path` holds. Bytes come in as a `Pending` (hashed as they are
written, checked against the sender's hash) that only `commit` keeps and `abort` leaves no
trace of; on S3 they stream as they arrive (`Incoming`: a multipart upload, a part sent as
soon as PART_SIZE bytes are in order), so a large upload is in the bucket by the time the
client closes it.
"""

import base64
import contextlib
import errno
import functools
import hashlib
import io
import logging
import os
import queue
import secrets
import shutil
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from django.conf import settings

from rosterdrop import process

log = logging.getLogger(__name__)

# Files are copied a window at a time, each window handed to the disk as soon as it is
# written: the final fsync then has little left to do, and the kernel does not stall the copy
# to flush it all at once.
WRITEBACK_WINDOW = 64 << 20
HASH_BLOCK = 1 << 20
# S3 multipart parts: at least 5 MiB except the last (S3's rule); 8 MiB parts reach 80 GB in
# S3's 10,000 parts, far past the largest upload allowed (ROSTERDROP_SFTP_MAX_FILE_SIZE).
PART_SIZE = 8 << 20

# The object metadata entry (x-amz-meta-sha256) with the sha256 of what `put` and `put_file` kept.
SHA256 = "sha256"

# (a file, its sha256 if known) -> (key, sha256) of an earlier kept upload of the same bytes,
# hashing the file only if needed (inbox.store knows the uploads; the backends only bytes).
Earlier = Callable[[Path, str | None], tuple[str, str] | None]


class Incoming(Protocol):
    """Bytes arriving in a file, in order from its start, told to the storage as they come."""

    def arrived(self, size: int) -> None:
        """Bytes [0, size) of the file are written."""

    def rewritten(self, offset: int) -> None:
        """Bytes from `offset` on were written again (a client rewriting what it sent)."""

    def abort(self) -> None:
        """The transfer ended without being kept: nothing of it may remain."""


class Pending(Protocol):
    """Bytes in storage that are not an upload yet: `commit` names them, `abort` removes them."""

    size: int
    sha256: str

    def commit(self, name: str) -> str:
        """Keep the bytes as `name` in their folder; the key they are kept under."""

    def abort(self) -> None: ...


class Storage(Protocol):
    """A place for raw uploads, by key (what `backend()` returns; mypy holds both to it)."""

    local: bool  # the data folder, where retention also finds the hard links to a file

    def incoming(self, folder: str, path: Path) -> Incoming:
        """A file being written at `path` whose bytes go to `folder` when they are kept."""

    def keep(
        self,
        folder: str,
        source: Path,
        sha256: str | None,
        earlier: Earlier,
        incoming: Incoming | None = None,
    ) -> Pending:
        """Store the complete file `source` (already sent as `incoming`, if given) in `folder`;
        `sha256` is the sender's hash of it, checked against the bytes stored."""

    def open(self, key: str) -> IO[bytes]:
        """The stored bytes for reading; FileNotFoundError if they are gone."""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """The stored bytes from `start` up to `end` (excluded); FileNotFoundError if gone."""

    def exists(self, key: str) -> bool: ...

    def put(self, key: str, data: bytes) -> None:
        """Keep small bytes under `key` whole (a template sample), replacing any there."""

    def put_file(self, key: str, source: Path) -> None:
        """Keep the file `source` under `key` (a restored upload), replacing any there."""

    def prune(self, folder: str, before: float) -> int:
        """Delete what was kept in `folder` before `before` (a Unix time); how many."""

    def fetch(self, key: str, target: Path, sha256: str) -> None:
        """A local file at `target` with the stored bytes, checked against `sha256`."""

    def delete(self, key: str) -> bool:
        """Delete the bytes; whether there were any."""

    def shown(self, key: str) -> str:
        """The key as the audit log and the operator read it."""

    def abort_dead(self) -> int:
        """Abort what transfers of dead processes left unfinished; how many."""


# What the copier tells the hasher: a window written (offset, length), None at the end, or
# the error that stopped it.
Window = tuple[int, int] | None | BaseException


def changed(name: str) -> OSError:
    return OSError(errno.EIO, f"{name} changed while it was being stored")


# -- the data folder ---------------------------------------------------------------------


def _copy_window(source: int, target: int, offset: int, length: int) -> int:
    """Copy up to `length` bytes at `offset` of file `source` to the same offset of file
    `target`, in the kernel where it can (copy_file_range); how many (0 at the end).

    Explicit offsets: neither file's position is used, so a hasher can read `target` meanwhile.
    """
    try:
        length = os.copy_file_range(source, target, length, offset, offset)
    except OSError as error:  # no kernel copy between these files: through user space
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        length = os.pwrite(target, os.pread(source, min(length, HASH_BLOCK), offset), offset)
    if length:
        # POSIX_FADV_DONTNEED starts writeback of the dirty pages just written and drops
        # only clean ones: they stay cached for the import that reads them next.
        os.posix_fadvise(target, offset, length, os.POSIX_FADV_DONTNEED)
    return length


def _hash_range(fd: int, offset: int, end: int, digest: "hashlib._Hash", buffer: bytearray) -> None:
    """Hash bytes [offset, end) of file `fd` (just written, still cached) through `buffer`."""
    while offset < end:
        read = os.preadv(fd, [memoryview(buffer)[: end - offset]], offset)
        if not read:
            raise OSError(errno.EIO, "a copy is shorter than written")
        digest.update(memoryview(buffer)[:read])
        offset += read


def _copy_windows(source: int, target: int, offset: int, done: "queue.Queue[Window]") -> None:
    """Copy file `source` from `offset` on into file `target`, telling `done` each window
    written as (offset, length), then None; an error is put on `done` as it is."""
    try:
        while length := _copy_window(source, target, offset, WRITEBACK_WINDOW):
            done.put((offset, length))
            offset += length
        os.fsync(target)
        done.put(None)
    except BaseException as error:  # raised by _copy_and_hash
        done.put(error)


def _copy_and_hash(source_path: Path, target: int) -> tuple[int, str]:
    """Copy a file into the open file `target`, durably; its size and sha256.

    The kernel copies in a thread while the copy, just written and still cached, is hashed
    window by window behind it: the hash is of the bytes kept, and the two overlap (measured
    on 900 MB: 0.7 s against 1.2-3.9 s for one read-hash-write loop).
    """
    digest = hashlib.sha256()
    size = 0
    done: queue.Queue[Window] = queue.Queue()
    # One buffer, reused: reading 64 MB windows as new bytes objects raised glibc's dynamic
    # mmap threshold, and the import that followed kept ~400 MB more resident.
    buffer = bytearray(HASH_BLOCK)
    source = os.open(source_path, os.O_RDONLY)
    try:
        copier = threading.Thread(target=_copy_windows, args=(source, target, 0, done), daemon=True)
        copier.start()
        while (window := done.get()) is not None:
            if isinstance(window, BaseException):
                raise window
            offset, length = window
            _hash_range(target, offset, offset + length, digest, buffer)
            size += length
        copier.join()
    finally:
        os.close(source)
    return size, digest.hexdigest()


def _link(existing: Path, target: str) -> bool:
    """Make `target` (a file of ours) another name of the file `existing`; whether it could
    be (gone meanwhile, or no hard links on this file system: False)."""
    link = target + ".link"
    try:
        os.link(existing, link)
    except OSError:
        return False
    os.replace(link, target)
    return True


def file_sha256(path: Path) -> str:
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _InPlace:
    """Bytes arriving in a transfer's own file in the data folder, which the inbox takes as
    it is when the transfer is kept (`LocalFolder.keep`: a hard link, hashed as it arrived):
    no copy, no second hash.

    Each WRITEBACK_WINDOW of the file is handed to the disk as it arrives, so that the fsync
    at the close, which the client waits for, has the last window left.
    """

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)
        self.written_back = 0  # bytes [0, written_back) handed to the disk

    def arrived(self, size: int) -> None:
        while size - self.written_back >= WRITEBACK_WINDOW:
            # Starts writeback of the dirty pages and drops none of them (only clean pages
            # go): they stay cached for the import that reads them next.
            os.posix_fadvise(self.fd, self.written_back, WRITEBACK_WINDOW, os.POSIX_FADV_DONTNEED)
            self.written_back += WRITEBACK_WINDOW

    def rewritten(self, offset: int) -> None:
        self.written_back = min(self.written_back, offset - offset % WRITEBACK_WINDOW)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _LocalPending:
    """A complete copy under a temporary name (`.incoming-*`) in its folder."""

    def __init__(self, root: Path, folder: Path):
        self.root, self.folder = root, folder
        self.fd, self.tmp = process.mkstemp(".incoming-", folder)
        self.final: Path | None = None
        self.size, self.sha256 = 0, ""

    def commit(self, name: str) -> str:
        self.final = self.folder / name
        os.replace(self.tmp, self.final)
        _sync_folder(self.folder)
        return str(self.final.relative_to(self.root))

    def close(self) -> None:
        os.close(self.fd)

    def abort(self) -> None:
        for name in (self.tmp, self.final):
            with contextlib.suppress(FileNotFoundError):
                if name is not None:
                    os.unlink(name)


class LocalFolder:
    """The data folder: each upload a file of its own; the same bytes sent again are a hard
    link to the earlier file (retention finds every name of them by inode)."""

    local = True

    def __init__(self, root: Path):
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / key

    def incoming(self, folder: str, path: Path) -> Incoming:
        return _InPlace(path)

    def keep(
        self,
        folder: str,
        source: Path,
        sha256: str | None,
        earlier: Earlier,
        incoming: Incoming | None = None,
    ) -> Pending:
        target = self.root / folder
        target.mkdir(parents=True, exist_ok=True)
        taken = isinstance(incoming, _InPlace)
        if taken and not sha256:  # rewritten as it arrived: hashed from the file, once
            sha256 = file_sha256(source)
        pending = _LocalPending(self.root, target)
        try:
            kept = self._link_earlier_copy(source, pending.tmp, sha256, earlier)
            if kept:
                pending.size, pending.sha256 = kept
            elif taken:
                # The transfer's own file, durable (its fsync at the close) and hashed as it
                # was written, is kept as it is: its bytes are the bytes hashed.
                assert sha256 is not None
                if not _link(source, pending.tmp):
                    raise OSError(errno.EIO, f"{source.name} could not be kept")
                pending.size, pending.sha256 = os.stat(pending.tmp).st_size, sha256
            else:
                pending.size, pending.sha256 = _copy_and_hash(source, pending.fd)
            if sha256 and pending.sha256 != sha256:
                raise changed(source.name)
        except BaseException:
            pending.abort()
            raise
        finally:
            pending.close()
        return pending

    def _link_earlier_copy(
        self, source: Path, target: str, sha: str | None, earlier: Earlier
    ) -> tuple[int, str] | None:
        """If an earlier upload kept the same bytes, make `target` a hard link to its file
        instead of a copy: (size, sha256); else None.

        An SIS that exports every night sends the same bytes whenever nothing changed: kept
        for the retention period, they would fill the disk with copies (1.2 GB a night for a
        large district), and copying them costs more than reading them (900 MB: 0.65 s to hash
        from the page cache, 1.2-2 s to copy durably). Each upload still has its own name, so
        retention deletes each in its turn. Where no link can be made (purged meanwhile, or no
        hard links on this file system), it is copied.
        """
        size = source.stat().st_size
        found = earlier(source, sha)
        if found is None or not _link(self.path(found[0]), target):
            return None
        return size, found[1]

    def open(self, key: str) -> IO[bytes]:
        return self.path(key).open("rb")

    def read_range(self, key: str, start: int, end: int) -> bytes:
        with self.path(key).open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = process.mkstemp(".incoming-", target.parent)
        with open(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = process.mkstemp(".incoming-", target.parent)
        os.close(fd)
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)

    def prune(self, folder: str, before: float) -> int:
        pruned = 0
        for old in self.path(folder).glob("*"):
            if old.stat().st_mtime < before:
                old.unlink(missing_ok=True)
                pruned += 1
        return pruned

    def fetch(self, key: str, target: Path, sha256: str) -> None:
        target.hardlink_to(self.path(key))  # the same inode: retention finds it

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def shown(self, key: str) -> str:
        return key

    def abort_dead(self) -> int:
        """Nothing here: the files of dead transfers are in folders recovery sweeps."""
        return 0


# -- S3 ----------------------------------------------------------------------------------


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class _S3Incoming:
    """A file streamed to an S3 key as it is written: a multipart upload begun with the first
    full part, each part sent in order (by a thread of its own, so that a front end's event
    loop never waits on the network) from the file itself, hashed as it is sent; S3 checks
    each part against its SHA-256 (ChecksumSHA256) on arrival.

    A file smaller than one part is sent in one PUT when it is kept. A rewrite of bytes
    already sent (rare: a client going back) makes it start over from the file when kept.
    """

    def __init__(self, s3: "S3Bucket", key: str, path: Path):
        self.s3, self.key = s3, key
        self.fd = os.open(path, os.O_RDONLY)
        self.sender: ThreadPoolExecutor | None = None
        self.sends: list[Future[None]] = []
        self.upload_id = ""
        self.parts: list[dict[str, Any]] = []
        self.queued = 0  # bytes handed to the sender
        self.digest = hashlib.sha256()  # of the bytes sent, in order
        self.stale = False
        self.failure: BaseException | None = None

    # -- as bytes arrive ---------------------------------------------------------------

    def arrived(self, size: int) -> None:
        while not self.stale and size - self.queued >= PART_SIZE:
            self._queue(self.queued, PART_SIZE)

    def rewritten(self, offset: int) -> None:
        if offset < self.queued:
            self.stale = True

    def _queue(self, offset: int, length: int) -> None:
        if self.sender is None:
            self.sender = ThreadPoolExecutor(1, thread_name_prefix="s3-part")
        self.queued = offset + length
        self.sends.append(self.sender.submit(self._send_part, offset, length))

    def _send_part(self, offset: int, length: int) -> None:
        if self.failure is not None:
            return
        try:
            data = os.pread(self.fd, length, offset)
            if len(data) != length:
                raise OSError(errno.EIO, f"{self.key}: the file is shorter than written")
            self.digest.update(data)
            if not self.upload_id:
                self.upload_id = self.s3.client.create_multipart_upload(
                    Bucket=self.s3.bucket, Key=self.s3.name(self.key), ChecksumAlgorithm="SHA256"
                )["UploadId"]
            number = len(self.parts) + 1
            checksum = _b64(hashlib.sha256(data).digest())
            answer = self.s3.client.upload_part(
                Bucket=self.s3.bucket,
                Key=self.s3.name(self.key),
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=checksum,
            )
            self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            if answer.get("ChecksumSHA256"):
                self.parts[-1]["ChecksumSHA256"] = answer["ChecksumSHA256"]
        except BaseException as exc:  # raised by finish()
            self.failure = exc

    def _drain(self) -> None:
        for send in self.sends:
            send.result()
        self.sends = []
        if self.sender is not None:
            self.sender.shutdown()
            self.sender = None

    # -- the end -----------------------------------------------------------------------

    def finish(self, size: int, name: str, sha256: str | None) -> str:
        """Send what is left of the file's `size` bytes and complete the object unless the
        bytes sent differ from the sender's `sha256`: their sha256."""
        if self.stale:
            self._abandon()
            self.stale, self.queued, self.digest, self.failure = False, 0, hashlib.sha256(), None
        if not self.upload_id and not self.sends:  # never a full part: one PUT
            data = os.pread(self.fd, size, 0)
            sent = hashlib.sha256(data).hexdigest()
            if len(data) != size or (sha256 and sent != sha256):
                raise changed(name)
            self.s3.put(self.key, data)
            return sent
        while size - self.queued > 0:
            self._queue(self.queued, min(PART_SIZE, size - self.queued))
        self._drain()
        if self.failure is not None:
            raise self.failure
        if sha256 and self.digest.hexdigest() != sha256:
            raise changed(name)  # the caller aborts: S3 drops the parts
        self.s3.client.complete_multipart_upload(
            Bucket=self.s3.bucket,
            Key=self.s3.name(self.key),
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )
        self.upload_id = ""
        return self.digest.hexdigest()

    def _abandon(self) -> None:
        """Stop sending (parts not yet begun are dropped) and abort the multipart upload: S3
        then drops every part sent."""
        if self.sender is not None:
            self.sender.shutdown(wait=True, cancel_futures=True)
            self.sender, self.sends = None, []
        if self.upload_id:
            self.s3.client.abort_multipart_upload(
                Bucket=self.s3.bucket, Key=self.s3.name(self.key), UploadId=self.upload_id
            )
            self.upload_id, self.parts = "", []

    def abort(self) -> None:
        try:
            self._abandon()
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _S3Pending:
    """A complete object: its key was chosen when the transfer began (S3 has no rename)."""

    def __init__(self, s3: "S3Bucket", key: str, size: int, sha256: str, own: bool):
        self.s3, self.key, self.size, self.sha256, self.own = s3, key, size, sha256, own

    def commit(self, name: str) -> str:
        return self.key

    def abort(self) -> None:
        if self.own:  # never the object of an earlier upload with the same bytes
            self.s3.delete(self.key)


class S3Bucket:
    """An S3-compatible bucket under a prefix. boto3 reads the endpoint (AWS_ENDPOINT_URL),
    credentials and region from its own settings; objects carry their sha256 as metadata.

    The same bytes sent again are not stored again: the upload shares the earlier upload's
    object (retention deletes an object when no upload kept keeps it).
    """

    local = False

    def __init__(self, bucket: str, prefix: str):
        self.bucket, self.prefix = bucket, prefix

    @functools.cached_property
    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5})
        return boto3.session.Session().client("s3", config=config)

    def name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _new_key(self, folder: str) -> str:
        """A key of its own for a transfer, named after this process (for recovery)."""
        return f"{folder}/{process.me()}~{secrets.token_hex(8)}"

    def incoming(self, folder: str, path: Path) -> Incoming:
        return _S3Incoming(self, self._new_key(folder), path)

    def keep(
        self,
        folder: str,
        source: Path,
        sha256: str | None,
        earlier: Earlier,
        incoming: Incoming | None = None,
    ) -> Pending:
        size = source.stat().st_size
        if incoming is None:  # a whole file (web, CLI, a renamed .filepart): maybe sent before
            found = earlier(source, sha256)
            if found is not None and self.exists(found[0]):
                return _S3Pending(self, found[0], size, found[1], own=False)
        stream = incoming if isinstance(incoming, _S3Incoming) else self.incoming(folder, source)
        assert isinstance(stream, _S3Incoming)
        try:
            stream.arrived(size)
            sent = stream.finish(size, source.name, sha256)
        except BaseException:
            stream.abort()
            raise
        stream.close()
        pending = _S3Pending(self, stream.key, size, sent, own=True)
        found = earlier(source, sent) if incoming is not None else None
        if found is not None and self.exists(found[0]):
            pending.abort()  # streamed before the bytes were known: keep the earlier object
            return _S3Pending(self, found[0], size, sent, own=False)
        return pending

    def put(self, key: str, data: bytes) -> None:
        sha = hashlib.sha256(data)
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.name(key),
            Body=data,
            ChecksumSHA256=_b64(sha.digest()),
            Metadata={SHA256: sha.hexdigest()},
        )

    def put_file(self, key: str, source: Path) -> None:
        """boto3's managed transfer: multipart for a large file, each part checksummed; the
        whole file's sha256 goes with it, for `get_file` to check."""
        sha = file_sha256(source)
        self.client.upload_file(
            str(source),
            self.bucket,
            self.name(key),
            ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {SHA256: sha}},
        )

    def get_file(self, key: str, target: Path) -> None:
        """A new file at `target` with the bytes `put` or `put_file` kept under `key`, checked
        against the sha256 they were kept with; FileNotFoundError if none are."""
        with open(target, "xb") as out:
            self._get_checked(key, out)

    def read(self, key: str) -> bytes:
        """The bytes `put` or `put_file` kept under `key`, checked as `get_file` does."""
        data = io.BytesIO()
        self._get_checked(key, data)
        return data.getvalue()

    def _get_checked(self, key: str, out: IO[bytes]) -> None:
        """Write the object's bytes to `out`, checked against the sha256 it was kept with."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.name(key))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(errno.ENOENT, f"{self.shown(key)} is not in storage") from None
        digest = hashlib.sha256()
        with contextlib.closing(answer["Body"]) as body:
            for chunk in iter(lambda: body.read(HASH_BLOCK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != answer.get("Metadata", {}).get(SHA256):
            raise OSError(errno.EIO, f"{self.shown(key)} does not hold the bytes it was kept with")

    def names(self, prefix: str) -> Iterator[str]:
        """The keys that begin with `prefix`."""
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self.name(prefix)):
            for item in page.get("Contents", []):
                yield self._key(item["Key"])

    def delete_others(self, prefix: str, kept: Collection[str]) -> None:
        """Delete the objects under `prefix` but those in `kept` (an older version's, what a
        restored backup does not hold): listed first, so each is deleted without a HEAD."""
        for key in [key for key in self.names(prefix) if key not in kept]:
            self.client.delete_object(Bucket=self.bucket, Key=self.name(key))

    def _key(self, name: str) -> str:
        """The key of an object's name in the bucket (`name`'s inverse)."""
        return name.removeprefix(f"{self.prefix}/") if self.prefix else name

    def prune(self, folder: str, before: float) -> int:
        pruned = 0
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=self.name(folder) + "/"):
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() < before:
                    self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                    pruned += 1
        return pruned

    def open(self, key: str) -> IO[bytes]:
        try:
            body: IO[bytes] = self.client.get_object(Bucket=self.bucket, Key=self.name(key))["Body"]
            return body
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(errno.ENOENT, f"{self.shown(key)} is not in storage") from None

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """One ranged GET (HTTP Range is inclusive of its last byte)."""
        if end <= start:
            return b""
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self.name(key), Range=f"bytes={start}-{end - 1}"
            )
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(errno.ENOENT, f"{self.shown(key)} is not in storage") from None
        with contextlib.closing(answer["Body"]) as body:
            data: bytes = body.read()
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.name(key))
        except self.client.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def fetch(self, key: str, target: Path, sha256: str) -> None:
        digest = hashlib.sha256()
        with contextlib.closing(self.open(key)) as body, open(target, "xb") as out:
            for chunk in iter(lambda: body.read(HASH_BLOCK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            target.unlink()
            raise OSError(errno.EIO, f"{self.shown(key)} does not hold the bytes received")

    def delete(self, key: str) -> bool:
        there = self.exists(key)
        self.client.delete_object(Bucket=self.bucket, Key=self.name(key))
        return there

    def shown(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.name(key)}"

    def unfinished(self) -> Iterator[tuple[str, str]]:
        """(key, upload id) of the multipart uploads begun under the prefix, not completed
        or aborted."""
        pages = self.client.get_paginator("list_multipart_uploads")
        start = f"{self.prefix}/" if self.prefix else ""
        for page in pages.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Uploads", []):
                yield item["Key"].removeprefix(start), item["UploadId"]

    def abort_dead(self) -> int:
        """Abort the multipart uploads of transfers whose process died on this host (a
        process on another host cleans up its own, or the bucket's lifecycle rule does)."""
        aborted = 0
        for key, upload_id in list(self.unfinished()):
            runner = process.parse(key.rsplit("/", 1)[-1])
            if runner is not None and not runner.alive:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.name(key), UploadId=upload_id
                )
                aborted += 1
        return aborted


def parse_url(url: str) -> S3Bucket:
    """ROSTERDROP_STORAGE_URL, s3://bucket/prefix."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"ROSTERDROP_STORAGE_URL is s3://bucket/prefix, not {url!r}")
    return S3Bucket(parts.netloc, parts.path.strip("/"))


@functools.cache
def _backend(url: str, root: Path) -> LocalFolder | S3Bucket:
    return parse_url(url) if url else LocalFolder(root)


def backend() -> Storage:
    """The storage this deployment's settings name."""
    return _backend(settings.STORAGE_URL, settings.DATA_DIR)


def shared() -> S3Bucket | None:
    """The deployment's shared storage (S3), or None for the data folder, where what it would
    share is already this host's files."""
    kept = _backend(settings.STORAGE_URL, settings.DATA_DIR)
    return kept if isinstance(kept, S3Bucket) else None
