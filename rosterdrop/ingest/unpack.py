"""Unpack: a zip, a folder or loose files -> named members, read as streams, never extracted.

A zip is checked before anything is read (member count, declared sizes, ratio, paths,
links, nesting, encryption, duplicates, overlapping entries) and again while streaming,
because headers can lie: a member that outgrows its declared size, fails its CRC or cannot be
inflated is refused by name, never with a traceback. What macOS adds to a zip it makes
(`__MACOSX/` resource forks, `.DS_Store`, `._` files) is ignored with a warning. A file named
.zip that is not one is refused as "not a zip file".
"""

import io
import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from rosterdrop.ingest.findings import FATAL, WARNING, Failure, Finding, FindingLog

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# What zipfile raises on a damaged or crafted archive, as it reads the directory or a member.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
)
# A local file header is at least this long, before its name and the member's data.
LOCAL_HEADER = 30


@dataclass(frozen=True)
class Limits:
    max_members: int
    max_total_bytes: int
    max_ratio: int


@dataclass(frozen=True)
class Member:
    """One file of an upload: its name as sent, its size and how to read it."""

    name: str
    size: int
    open: Callable[[], BinaryIO]
    package: str  # the zip it came from, or "" for a loose file


def _refuse(code: str, message: str, file: str = "", value: str = "") -> Failure:
    return Failure(Finding(FATAL, code, message, file=file, value=value))


def is_zip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (ZIP_MAGIC, EMPTY_ZIP_MAGIC)


class _LimitedReader(io.RawIOBase):
    """Streams a zip member and stops as soon as it outgrows what its header declared."""

    def __init__(self, raw: IO[bytes], name: str, package: str, declared: int, budget: list[int]):
        self._raw, self._name, self._package = raw, name, package
        self._left, self._budget = declared, budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:  # a writable buffer (io.RawIOBase)
        try:
            data = self._raw.read(len(buffer))
        except ZIP_ERRORS as exc:
            raise _damaged(self._name, self._package, exc) from None
        n = len(data)
        self._left -= n
        self._budget[0] -= n
        if self._left < 0 or self._budget[0] < 0:
            raise _refuse(
                "zip_too_large",
                f"{self._name} unpacks to more data than the zip declares or than is allowed; "
                "the zip looks damaged or crafted. Re-create it with a standard zip tool.",
                file=self._name,
            )
        buffer[:n] = data
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _damaged(name: str, package: str, exc: BaseException) -> Failure:
    why = "its CRC-32 does not match" if "CRC" in str(exc) else "it cannot be unpacked"
    return _refuse(
        "zip_member_damaged",
        f"{name} in {package} is damaged ({why}): the zip was not written completely or was "
        "changed on the way; nothing was applied. Make the zip again and send it.",
        file=name,
        value=package,
    )


def _not_a_zip(package: str, why: str) -> Failure:
    return _refuse(
        "zip_invalid",
        f"{package} is not a zip file that can be read ({why}); nothing was applied. Send the "
        "zip again, made with a standard zip tool, or the CSV files themselves.",
        file=package,
    )


def _made_by_macos(name: str) -> bool:
    """Resource forks and folder settings that macOS's Compress adds: never roster data."""
    return (
        name.startswith("__MACOSX/")
        or PurePosixPath(name).name == ".DS_Store"
        or (name.startswith("._") and "/" not in name)
    )


def _overlapping(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> str:
    """The name of an entry whose data runs into the next entry (a crafted zip), or ""."""
    spans = sorted(infos, key=lambda i: i.header_offset)
    ends = [i.header_offset for i in spans[1:]] + [archive.start_dir]
    for info, end in zip(spans, ends, strict=True):
        if info.header_offset + LOCAL_HEADER + info.compress_size > end:
            return info.filename
    return ""


def _zip_members(path: Path, limits: Limits, log: FindingLog) -> list[Member]:
    package = path.name
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS:
        raise _not_a_zip(package, "its list of entries cannot be read: it may be cut off") from None
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise _refuse(
            "zip_too_many_members",
            f"{package} holds {len(infos)} entries; at most {limits.max_members} are accepted.",
            file=package,
        )
    ignored = [i.filename for i in infos if _made_by_macos(i.filename)]
    if ignored:
        log.add(
            Finding(
                WARNING,
                "zip_member_ignored",
                f"{len(ignored)} entries of {package} that macOS adds to a zip it makes "
                f"({', '.join(ignored[:3])}{', ...' if len(ignored) > 3 else ''}) were ignored: "
                "they hold no roster data.",
                file=package,
                value=ignored[0],
            )
        )
        infos = [i for i in infos if not _made_by_macos(i.filename)]
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        mode = info.external_attr >> 16
        if info.is_dir() or stat.S_ISDIR(mode):
            problem = "is a folder; put the CSV files at the top level of the zip"
        elif stat.S_ISLNK(mode):
            problem = "is a symbolic link, which is not accepted"
        elif "/" in name or "\\" in name or name.startswith(".."):
            problem = "is inside a folder or has a path; put the CSV files at the top level"
        elif info.flag_bits & 0x1:
            problem = "is encrypted; send the zip without a password"
        elif name.lower().endswith((".zip", ".gz", ".7z", ".rar", ".tar")):
            problem = "is an archive inside the archive; send the CSV files themselves"
        elif name in seen:
            problem = "appears twice in the zip"
        else:
            problem = ""
        if problem:
            raise _refuse(
                "zip_member_refused", f"Entry {name!r} in {package} {problem}.", package, name
            )
        seen.add(name)
        total += info.file_size
        if (
            info.file_size > limits.max_ratio * max(info.compress_size, 1)
            and info.file_size > 1 << 20
        ):
            raise _refuse(
                "zip_ratio",
                f"{name} in {package} is compressed {info.file_size // max(info.compress_size, 1)} "
                f"to 1, above the limit of {limits.max_ratio} to 1 (a zip bomb is refused).",
                package,
                name,
            )
    overlapping = _overlapping(archive, archive.infolist())
    if overlapping:
        raise _refuse(
            "zip_member_refused",
            f"Entry {overlapping!r} in {package} overlaps another entry (a crafted zip).",
            package,
            overlapping,
        )
    if total > limits.max_total_bytes:
        raise _refuse(
            "zip_too_large",
            f"{package} unpacks to {total} bytes; at most {limits.max_total_bytes} are accepted.",
            file=package,
        )
    budget = [limits.max_total_bytes]

    def opener(info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
        def open_member() -> BinaryIO:
            try:
                raw = archive.open(info)
            except ZIP_ERRORS as exc:
                raise _damaged(info.filename, package, exc) from None
            reader = _LimitedReader(raw, info.filename, package, info.file_size, budget)
            return io.BufferedReader(reader)

        return open_member

    return [Member(i.filename, i.file_size, opener(i), package) for i in infos]


def _loose_member(path: Path) -> Member:
    if path.is_symlink() or not path.is_file():
        raise _refuse(
            "file_refused", f"{path.name} is not a regular file.", file=path.name, value=str(path)
        )
    return Member(path.name, path.stat().st_size, lambda: path.open("rb"), "")


def unpack(paths: list[Path], limits: Limits, log: FindingLog | None = None) -> list[Member]:
    """Members of one upload: one zip, or several loose files (a folder is expanded by the
    caller, `reader.expand`). Warnings (entries ignored) go to `log`."""
    log = FindingLog() if log is None else log
    for path in paths:
        if path.name.lower().endswith(".zip") and path.is_file() and not is_zip(path):
            raise _not_a_zip(path.name, "it does not start as a zip file does")
    if len(paths) == 1 and paths[0].is_file() and is_zip(paths[0]):
        return _zip_members(paths[0], limits, log)
    members = [_loose_member(p) for p in paths]
    zips = [m.name for m, p in zip(members, paths, strict=True) if is_zip(p)]
    if zips:
        raise _refuse(
            "zip_mixed",
            f"{zips[0]} is a zip sent together with other files; send one zip or loose CSV files.",
            file=zips[0],
        )
    return members
