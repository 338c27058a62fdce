"""An upload in progress, one object for SFTP and FTPS (what SFTPGo's BaseTransfer is to its
transports).

The bytes go to a temp file in the district's staging folder (outside the folder the client
sees), are hashed as they arrive and, when uploads are kept in S3, streamed there as they
arrive (`rosterdrop.storage`: a multipart upload, aborted unless the transfer is kept). Each
write is checked before it is made: nothing past the end of what arrived (a write at a far
offset would make the server fill the hole), no file past the size cap, no district past its
storage quota; a refused write fails the whole transfer.

Only `finish(clean=True)` keeps it: an SFTP close the client asked for (SSH_FXP_CLOSE), an FTPS
data connection ended by a TLS close_notify. Every other end (end of file on the SSH channel or
a disconnect with the file still open, a data connection cut without close_notify, a refused
write) is an aborted transfer, SFTPGo's semantics: audited, its bytes deleted, no upload.
"""

import contextlib
import errno
import hashlib
import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from rosterdrop import process, storage
from rosterdrop.districts.models import District
from rosterdrop.inbox import store
from rosterdrop.inbox.models import Upload
from rosterdrop.intake import folder

log = logging.getLogger(__name__)

COPY_BLOCK = 1 << 20
WRITE_BATCH = 1 << 20  # bytes written at once by the writer thread, and hashed by the hasher
# A transfer's batches waiting for the writer (or the hasher) thread: past this many its writes
# wait for the oldest (the disk is slower than the network), as a pwrite in the loop would have.
MAX_QUEUED = 8

# One thread writes the bytes of every transfer, a batch at a time in the order they were
# handed over (its queue is first in, first out), and another hashes them beside it, in the
# same order: pwrite and hashlib let go of the GIL, so they run beside the front end's event
# loop, not in it (a pwrite and a sha256 update per 32 KiB SFTP write were ~14% and ~30% of the
# loop's time), and beside each other (one thread doing both a batch after the other was the
# slowest stage of a stream: the loop waited for it at nearly every batch, bench/README.md
# "Uploads").
_WRITER = ThreadPoolExecutor(1, thread_name_prefix="transfer-write")
_HASHER = ThreadPoolExecutor(1, thread_name_prefix="transfer-hash")
IOV_MAX = os.sysconf("SC_IOV_MAX")  # buffers per pwritev


def _write(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write every byte of `data` at `offset` of file `fd` (a short write continued), or raise:
    the inbox keeps the file under the hash of the bytes written."""
    view = memoryview(data)
    while view:
        wrote = os.pwrite(fd, view, offset)
        if not wrote:
            raise OSError(errno.EIO, "nothing written")
        view, offset = view[wrote:], offset + wrote


def _write_parts(fd: int, parts: Sequence[bytes | memoryview], offset: int) -> None:
    """_write for the bytes of `parts` one after the other, without joining them: one pwritev
    per IOV_MAX of them (a short one continued)."""
    for start in range(0, len(parts), IOV_MAX):
        some = parts[start : start + IOV_MAX]
        size = sum(map(len, some))
        wrote = os.pwritev(fd, some, offset)
        if wrote < size:
            _write(fd, b"".join(some)[wrote:], offset + wrote)
        offset += size


class _Writer:
    """A transfer's bytes arriving in order at the end of its file, a batch at a time written
    by the writer thread (one pwritev per WRITE_BATCH), then told to storage as arrived
    (`Incoming.arrived`), and hashed by the hasher thread (one join and one hash update). A
    write elsewhere in the file waits for the batches (`flush`) and is made at once, and from
    then on the file is hashed at the end."""

    def __init__(self, fd: int, sent: storage.Incoming):
        self.fd = fd
        self.sent = sent
        self.digest: hashlib._Hash | None = hashlib.sha256()  # None once rewritten
        # bytes, or views of bytes (an SFTP write's pieces as they arrived): nobody changes them
        self.batch: list[bytes | memoryview] = []
        self.size = 0
        self.start = 0  # where the batch goes in the file
        self.queued: deque[Future[None]] = deque()  # the writer thread's batches
        self.hashed: deque[Future[None]] = deque()  # the hasher thread's
        self.failure: OSError | None = None  # the writer thread's, raised by flush()

    def append(self, parts: Sequence[bytes | memoryview], size: int) -> None:
        """The next `size` bytes of the file, in `parts`."""
        self.batch.extend(parts)
        self.size += size
        if self.size >= WRITE_BATCH:
            self._hand_over()

    def write_at(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset`, before the end of the file: at once, after the batches."""
        self.flush()
        self.digest = None
        _write(self.fd, data, offset)
        self.sent.rewritten(offset)
        self.start = max(self.start, offset + len(data))
        self.sent.arrived(self.start)

    def _hand_over(self) -> None:
        if self.batch:
            batch, offset, size = self.batch, self.start, self.size
            self.queued.append(_WRITER.submit(self._write_batch, batch, offset, size))
            if self.digest is not None:
                self.hashed.append(_HASHER.submit(_hash, self.digest, batch))
            self.start += size
            self.batch, self.size = [], 0
            while len(self.queued) > MAX_QUEUED:
                self.queued.popleft().result()
            while len(self.hashed) > MAX_QUEUED:
                self.hashed.popleft().result()

    def _write_batch(self, batch: list[bytes | memoryview], offset: int, size: int) -> None:
        """The writer thread: one batch into the file; the first failure is kept and stops the
        rest."""
        if self.failure is not None:
            return
        try:
            _write_parts(self.fd, batch, offset)
            self.sent.arrived(offset + size)
        except OSError as exc:
            self.failure = exc

    def flush(self) -> None:
        """Every byte handed over is in the file and hashed; the writer's failure, if any,
        raised."""
        self._hand_over()
        while self.queued:
            self.queued.popleft().result()
        while self.hashed:
            self.hashed.popleft().result()
        if self.failure is not None:
            raise self.failure


def _hash(digest: "hashlib._Hash", batch: list[bytes | memoryview]) -> None:
    """The hasher thread: a batch joined, then hashed in one update (hashlib lets go of the
    GIL for it, once; an update per piece would take it back after each)."""
    digest.update(b"".join(batch))


def _in_progress(staging: Path) -> int:
    """Bytes the district's other transfers hold right now (they count toward its quota)."""
    total = 0
    with os.scandir(staging) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # finished meanwhile
                total += entry.stat(follow_symlinks=False).st_size
    return total


class Transfer:
    """One file being received under `name` for a district's login."""

    def __init__(
        self,
        district: District,
        name: str,
        source: str,
        login: str,
        ip: str | None,
        *,
        append: bool = False,
    ):
        """Start a transfer (this reads the database: the quota); `append` puts every write at
        the end (SFTP's append flag, FTPS APPE)."""
        self.district = district
        self.name = name
        self.source = source
        self.login = login
        self.ip = ip
        self.append = append
        staging = folder.staging_dir(district.slug)
        # What the district may still keep: its quota less its stored uploads and the other
        # transfers it has in progress.
        self.room = store.quota_room(district) - _in_progress(staging)
        fd, tmp = process.mkstemp(".upload-", staging)  # named for recovery after a crash
        self.fd = fd
        self.path = Path(tmp)
        self.sent = store.incoming(district, self.path)  # to S3 as the bytes arrive
        self.size = 0
        self.position = 0  # where a stream write (FTPS) goes
        self.writer = _Writer(fd, self.sent)
        self.failed = ""
        self.finished = False

    def resume(self) -> None:
        """Start from the content of the file of this name in the folder (an SFTP open
        without truncation, FTPS REST or APPE), checked and hashed like any write; on failure
        nothing is left."""
        try:
            root = folder.open_root(self.district.slug)
            with folder.open_file(self.district, root, self.name) as src:
                while block := src.read(COPY_BLOCK):
                    self.write_at(self.size, block)
        except BaseException:
            self.discard()
            raise

    # -- receiving -----------------------------------------------------------------------

    def _refuse(self, code: int, message: str) -> None:
        """Fail the transfer: this write and any later one are refused, the close aborts."""
        self.failed = message
        level = logging.WARNING if code == errno.EDQUOT else logging.INFO
        log.log(
            level, "%s upload %s for %s refused: %s", self.source, self.name, self.login, message
        )
        raise OSError(code, message)

    def write_at(self, offset: int, data: bytes) -> int:
        """Write `data` at `offset` (at the end when appending); refused past the end, the
        size cap or the quota."""
        return self.write_parts(offset, (data,), len(data))

    def write_parts(self, offset: int, parts: Sequence[bytes | memoryview], size: int) -> int:
        """write_at for the `size` bytes of `parts` one after the other (an SFTP write as it
        arrived, sftp._Session): not joined here, but by the hasher thread with its batch."""
        if self.failed:
            raise OSError(errno.EIO, self.failed)
        if self.writer.failure is not None:  # a batch the writer thread could not write
            self._written()
        if self.append:
            offset = self.size
        end = offset + size
        if offset > self.size:
            self._refuse(
                errno.EINVAL,
                f"Write at byte {offset} is past the end of the file ({self.size} bytes); "
                "files must be written in order, without gaps",
            )
        if end > settings.SFTP_MAX_FILE_SIZE:
            self._refuse(
                errno.EFBIG, f"File is larger than the {settings.SFTP_MAX_FILE_SIZE} byte limit"
            )
        if end > self.room:
            self._refuse(
                errno.EDQUOT,
                f"{store.quota_exceeded(self.district)}; the operator has been told",
            )
        if offset == self.size:  # in order: written by the writer thread, hashed by the hasher
            self.writer.append(parts, size)
        else:  # rewriting what arrived: hashed from the file at the end
            try:
                self.writer.write_at(offset, b"".join(parts))
            except OSError as exc:
                self._refuse(exc.errno or errno.EIO, f"Could not store the file ({exc.strerror})")
        self.size = max(self.size, end)
        return size

    def _written(self) -> None:
        """Every byte received is in the file; a write that failed fails the transfer."""
        try:
            self.writer.flush()
        except OSError as exc:
            self._refuse(exc.errno or errno.EIO, f"Could not store the file ({exc.strerror})")

    def read_at(self, offset: int, size: int) -> bytes:
        self._written()
        return os.pread(self.fd, size, offset)

    def stat(self) -> os.stat_result:
        self._written()
        return os.fstat(self.fd)

    def fsync(self) -> None:
        self._written()
        os.fsync(self.fd)

    @property
    def sha256(self) -> str | None:
        """The hash of the bytes as they arrived, when they arrived in order (once written)."""
        digest = self.writer.digest
        return digest.hexdigest() if digest is not None else None

    # -- the file protocol pyftpdlib's data channel uses ----------------------------------

    def write(self, data: bytes) -> int:
        written = self.write_at(self.position, data)
        self.position += written  # unused when appending: every write goes to the end
        return written

    def seek(self, offset: int) -> int:
        if offset > self.size:
            self._refuse(errno.EINVAL, f"Cannot resume at byte {offset} of a {self.size} byte file")
        self.position = offset
        return offset

    @property
    def closed(self) -> bool:
        return self.finished

    def close(self) -> None:
        """pyftpdlib closing a file it never settled (a refused REST, a data connection that
        never opened): nothing was received, so nothing is recorded."""
        self.discard()

    # -- the end -------------------------------------------------------------------------

    def discard(self) -> None:
        if not self.finished:
            self.finished = True
            with contextlib.suppress(OSError):  # the writer thread done with the file
                self.writer.flush()
            self.sent.abort()
            os.close(self.fd)
            self.path.unlink(missing_ok=True)

    def finish(self, clean: bool, reason: str = "") -> Upload | None:
        """Keep the file if the client closed it cleanly and no write was refused (the
        upload, or None for a staging name that waits for its rename); otherwise abort:
        record why, delete the bytes. A clean close that keeps nothing (a write was refused,
        or the file could not be stored) raises OSError, for the client to hear it."""
        if self.finished:
            return None
        self.finished = True
        try:
            try:
                with contextlib.suppress(OSError):  # a failed write: self.failed says so
                    self._written()
                keep = clean and not self.failed
                if keep:
                    os.fsync(self.fd)
            finally:
                os.close(self.fd)
            if keep:
                return folder.complete(
                    self.district,
                    self.name,
                    self.path,
                    self.source,
                    self.login,
                    self.ip,
                    self.sha256,
                    self.sent,
                )
            why = self.failed or reason or "the transfer did not end with a clean close"
            log.info("%s upload %s for %s aborted: %s", self.source, self.name, self.login, why)
            folder.aborted(self.name, f"{why} ({self.size} bytes received)", self.login, self.ip)
            if clean:
                raise OSError(errno.EIO, f"{why}; the file was not kept")
            return None
        finally:
            self.sent.abort()  # nothing left to do once kept; else nothing of it remains
            self.path.unlink(missing_ok=True)
