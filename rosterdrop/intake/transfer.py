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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from django.conf import settings

from rosterdrop import process
from rosterdrop.districts.models import District
from rosterdrop.inbox import store
from rosterdrop.inbox.models import Upload
from rosterdrop.intake import folder

log = logging.getLogger(__name__)

COPY_BLOCK = 1 << 20
HASH_BATCH = 1 << 20  # bytes handed to the hasher at once

# One thread hashes the bytes of every transfer, a batch at a time in the order they were
# handed over (its queue is first in, first out): hashlib lets go of the GIL, so the hash runs
# beside the front end's event loop, on the other core, not in it (sha256 of each 32 KiB SFTP
# write took ~30% of the loop's time, bench/README.md "Uploads").
_HASHER = ThreadPoolExecutor(1, thread_name_prefix="transfer-hash")


def _update(digest: "hashlib._Hash", batch: list[bytes]) -> None:
    """One update per batch: the thread takes the GIL back after each, and a thread that
    holds it when the OS puts it aside on a busy machine stops the event loop meanwhile."""
    digest.update(b"".join(batch))


class _Sha256:
    """The sha256 of bytes as they arrive, computed by the hasher thread."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.batch: list[bytes] = []
        self.size = 0
        self.last: Future[None] | None = None

    def update(self, data: bytes) -> None:
        self.batch.append(data)  # bytes: nobody changes them meanwhile
        self.size += len(data)
        if self.size >= HASH_BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.batch:
            self.last = _HASHER.submit(_update, self.digest, self.batch)
            self.batch, self.size = [], 0

    def hexdigest(self) -> str:
        self._hand_over()
        if self.last is not None:
            self.last.result()
        return self.digest.hexdigest()


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
        self._digest: _Sha256 | None = _Sha256()
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
        if self.failed:
            raise OSError(errno.EIO, self.failed)
        if self.append:
            offset = self.size
        end = offset + len(data)
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
        try:
            # Every byte or a refusal: the inbox keeps this file under the hash of `data`.
            written = 0
            while written < len(data):
                wrote = os.pwrite(self.fd, memoryview(data)[written:], offset + written)
                if not wrote:
                    raise OSError(errno.EIO, "nothing written")
                written += wrote
        except OSError as exc:
            self._refuse(exc.errno or errno.EIO, f"Could not store the file ({exc.strerror})")
        if self._digest is not None and offset == self.size:
            self._digest.update(data)
        elif offset != self.size:  # rewriting what arrived: hashed from the file at the end
            self._digest = None
            self.sent.rewritten(offset)
        self.size = max(self.size, end)
        self.sent.arrived(self.size)
        return len(data)

    def read_at(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def fsync(self) -> None:
        os.fsync(self.fd)

    @property
    def sha256(self) -> str | None:
        """The hash of the bytes as they arrived, when they arrived in order."""
        return self._digest.hexdigest() if self._digest is not None else None

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
            keep = clean and not self.failed
            try:
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
