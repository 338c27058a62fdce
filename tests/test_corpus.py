"""A corpus of malformed uploads, each made here the way real exporters (and attackers) get
things wrong, with the outcome it must have: the zip and CSV cases of the reference's security
list (docs/reference/stack.md section 9, items 21-22) and every input case of issue 13.

Every case runs through `check` (no database, as `rosterdrop validate`); the ones with an
`imported` status also run as a full import over the small school already in the roster, on
SQLite and PostgreSQL, where nothing the roster held may be lost.
"""

import io
import stat
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SCHOOL_SMALL

from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.findings import ERROR

Upload = dict[str, bytes]
# The school with LF line ends (its files have CRLF), so that each case says its line ends.
SCHOOL: Upload = {
    p.name: p.read_bytes().replace(b"\r\n", b"\n") for p in sorted(SCHOOL_SMALL.iterdir())
}
USERS = "users.csv"
GIVEN = 8  # the column of givenName in users.csv


@dataclass(frozen=True)
class Case:
    """An upload and what must become of it.

    `status`: what `check` finds (failed = a fatal finding; applied_with_errors = an error);
    `code`, `file`, `line`: a finding it must report; `imported`: the sync's status when the
    upload is imported over the school (blank: not imported); `settings`: overrides.
    """

    name: str
    build: Callable[[], Upload]
    status: str
    code: str = ""
    file: str = ""
    line: int | None = None
    imported: str = ""
    settings: dict = field(default_factory=dict)


def school(**files: bytes) -> Upload:
    return {**SCHOOL, **{name.replace("_csv", ".csv"): data for name, data in files.items()}}


def users(data: bytes) -> Upload:
    return school(users_csv=data)


def lines(file: str = USERS) -> list[bytes]:
    return SCHOOL[file].split(b"\n")  # the last is b"" (a final line break)


Edit = tuple[int, Callable[[bytes], bytes]]


def edited(*edits: Edit, file: str = USERS) -> Callable[[], Upload]:
    """The school with physical lines of `file` edited: (line, edit) pairs."""

    def build() -> Upload:
        parts = lines(file)
        for n, edit in edits:
            parts[n - 1] = edit(parts[n - 1])
        return {**SCHOOL, file: b"\n".join(parts)}

    return build


def cell(column: int, value: bytes) -> Callable[[bytes], bytes]:
    def edit(line: bytes) -> bytes:
        values = line.split(b",")
        values[column] = value
        return b",".join(values)

    return edit


def appended(column: int, text: bytes) -> Callable[[bytes], bytes]:
    def edit(line: bytes) -> bytes:
        values = line.split(b",")
        values[column] += text
        return b",".join(values)

    return edit


def given(n: int, value: bytes) -> Edit:
    return n, cell(GIVEN, value)


def ragged(n: int) -> Edit:
    return n, lambda line: line + b",extra"


def inserted(after: int, text: bytes) -> Callable[[], Upload]:
    def build() -> Upload:
        parts = lines()
        return users(b"\n".join(parts[:after] + [text] + parts[after:]))

    return build


def whole(edit: Callable[[bytes], bytes]) -> Callable[[], Upload]:
    return lambda: users(edit(SCHOOL[USERS]))


def cut_at(line: int, keep: int) -> Callable[[], Upload]:
    """users.csv cut `keep` bytes into physical line `line`, as an upload that died."""

    def build() -> Upload:
        parts = lines()
        return users(b"\n".join(parts[: line - 1]) + b"\n" + parts[line - 1][:keep])

    return build


def encoded(encoding: str, bom: bytes = b"") -> Callable[[], Upload]:
    return lambda: users(bom + SCHOOL[USERS].decode().encode(encoding))


def cp1252_with(byte: int) -> Callable[[], Upload]:
    return edited(given(5, "Müller".encode("cp1252")), given(9, b"Ma" + bytes([byte]) + b"x"))


def mixed_line_ends(data: bytes) -> bytes:
    return b"".join(
        line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(data.split(b"\n")[:-1])
    )


# Zips -----------------------------------------------------------------------------------------


def zipped(
    members: dict[str, bytes] | None = None,
    method: int = zipfile.ZIP_DEFLATED,
    infos: dict[str, dict] | None = None,
    again: tuple[str, ...] = (),
) -> bytes:
    """A zip of `members` (the school by default); `infos`: ZipInfo attributes by name;
    `again`: names written a second time."""
    buffer = io.BytesIO()
    members = SCHOOL if members is None else members
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as archive:
        warnings.simplefilter("ignore")  # a duplicate name, on purpose
        for name, data in [*members.items(), *((n, members[n]) for n in again)]:
            info = zipfile.ZipInfo(name, (2025, 9, 1, 0, 0, 0))
            info.compress_type = method
            for attribute, value in (infos or {}).get(name, {}).items():
                setattr(info, attribute, value)
            archive.writestr(info, data)
    return buffer.getvalue()


def upload_zip(data: bytes | Callable[[], bytes]) -> Callable[[], Upload]:
    return lambda: {"upload.zip": data() if callable(data) else data}


def central_entries(data: bytes):
    """(offset, name) of each central directory entry of a zip."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        size = struct.unpack("<H", data[at + 28 : at + 30])[0]
        yield at, data[at + 46 : at + 46 + size].decode()
        at = data.find(b"PK\x01\x02", at + 46 + size)


def patched_central(name: str, edit: Callable[[bytearray, int], None], method=0) -> bytes:
    """A zip of the school whose central directory entry for `name` is edited in place."""
    data = bytearray(zipped(method=method))
    for at, entry in list(central_entries(bytes(data))):
        if entry == name:
            edit(data, at)
    return bytes(data)


def declared_size(delta: int, method: int) -> Callable[[], bytes]:
    def edit(data: bytearray, at: int) -> None:
        for offset in (20, 24) if method == zipfile.ZIP_STORED else (24,):
            size = struct.unpack("<I", data[at + offset : at + offset + 4])[0]
            data[at + offset : at + offset + 4] = struct.pack("<I", size + delta)

    return lambda: patched_central(USERS, edit, method)


def bad_crc() -> bytes:
    data = bytearray(zipped(method=zipfile.ZIP_STORED))
    at = data.find(b"Cyrus")
    data[at] = ord("K")
    return bytes(data)


def overlapping() -> bytes:
    """Two central directory entries pointing at the same local header."""
    data = bytearray(zipped(method=zipfile.ZIP_STORED))
    entries = dict((name, at) for at, name in central_entries(bytes(data)))
    first = data[entries["academicSessions.csv"] + 42 : entries["academicSessions.csv"] + 46]
    data[entries[USERS] + 42 : entries[USERS] + 46] = first
    return bytes(data)


def encrypted() -> bytes:
    """users.csv flagged as encrypted (bit 0), as a password-protected zip has it."""

    def edit(data: bytearray, at: int) -> None:
        flags = struct.unpack("<H", data[at + 8 : at + 10])[0]
        data[at + 8 : at + 10] = struct.pack("<H", flags | 0x1)

    return patched_central(USERS, edit)


def unsupported_method() -> bytes:
    def edit(data: bytearray, at: int) -> None:
        data[at + 10 : at + 12] = struct.pack("<H", 99)

    return patched_central(USERS, edit)


def bomb() -> bytes:
    return zipped({**SCHOOL, USERS: SCHOOL[USERS] + b"\n" * (40 << 20)})


def macos() -> bytes:
    return zipped(
        {
            **SCHOOL,
            "__MACOSX/": b"",
            "__MACOSX/._users.csv": b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X",
            ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(64),
        }
    )


LINK = {"external_attr": (stat.S_IFLNK | 0o777) << 16, "create_system": 3}
RANDOM = bytes((i * 7919 + 13) % 251 for i in range(4096))

CASES = [
    # Quotes: a row the reader cannot end costs only its first line.
    Case("stray quote", edited(given(40, b'"Amina')), "applied_with_errors",
         "unterminated_quote", USERS, 40, imported="no_changes"),
    Case("stray quote on the last line", edited(given(80, b'"Amina')), "applied_with_errors",
         "unterminated_quote", USERS, 80),
    Case("text after a closing quote", edited(given(12, b'"Ann"x')), "applied_with_errors",
         "csv_syntax", USERS, 12),
    Case("a quote inside an unquoted value", edited(given(13, b'O"Brien')), "applied"),
    Case("stray quote closed by a later quoted value",
         edited(given(20, b'"Amina'), given(25, b'"Smith, J"')), "applied_with_errors",
         "unterminated_quote", USERS, 20),
    Case("a quote joining two lines of the right width",
         edited(given(10, b'"Ann'), given(11, b'Marie"')), "applied_with_errors",
         "unterminated_quote", USERS, 10),
    Case("a value over two lines, later lines exact",
         edited(given(10, b'"Ann\nMarie"'), ragged(29)), "applied_with_errors", "row_width",
         USERS, 30),
    Case("a field of ten million quotes", edited(given(50, b'"' * (10 << 20))),
         "applied_with_errors", "field_too_large", USERS, 50),
    Case("an odd field of quotes", edited(given(50, b'"' * ((10 << 20) + 1))),
         "applied_with_errors", "field_too_large", USERS, 50),
    Case("a header with an unterminated quote", edited((1, lambda h: b'"' + h)), "failed",
         "header_invalid", USERS, 1),
    # Rows and lines.
    Case("a row one value short", edited((15, lambda line: line.rsplit(b",", 1)[0])),
         "applied_with_errors", "row_width", USERS, 15),
    Case("a row one value long", edited(ragged(16)), "applied_with_errors", "row_width", USERS, 16),
    Case("empty values after the last column", edited((17, lambda line: line + b",,")),
         "applied", "row_trailing_delimiters", USERS, 17),
    Case("blank lines", inserted(20, b"\n"), "applied"),
    Case("a line of blanks", inserted(20, b"   "), "applied_with_errors", "row_width", USERS,
         21),
    Case("a line of 65 MB", inserted(20, b"x" * (65 << 20)), "failed", "line_too_long", USERS,
         21),
    Case("an empty users.csv", lambda: users(b""), "failed", "file_empty", USERS),
    Case("users.csv with only its header", lambda: users(lines()[0] + b"\n"),
         "applied_with_errors", "reference_missing", imported="held"),
    Case("users.csv with only its header, no line break", lambda: users(lines()[0]),
         "applied_with_errors", "reference_missing"),
    Case("a blank first line", whole(lambda d: b"\n" + d), "failed", "header_missing", USERS, 1),
    Case("a header named twice", edited((1, lambda h: h + b",email")), "failed",
         "header_duplicate_column", USERS, 1),
    Case("semicolons for commas", whole(lambda d: d.replace(b",", b";")), "failed",
         "header_missing_column", USERS, 1),
    # Line ends: exact line numbers whatever they are.
    Case("CRLF line ends", whole(lambda d: d.replace(b"\n", b"\r\n")), "applied"),
    Case("CR CR LF line ends", whole(lambda d: d.replace(b"\n", b"\r\r\n")), "applied",
         "line_ends_doubled", USERS),
    Case("old-Mac CR line ends", whole(lambda d: d.replace(b"\n", b"\r")), "applied"),
    Case("LF and CRLF mixed", whole(mixed_line_ends), "applied"),
    Case("a lone CR inside a row", edited(given(10, b"Ann\rMarie"), ragged(30)),
         "applied_with_errors", "row_width", USERS, 30, imported="applied_with_errors"),
    Case("a lone CR inside a quoted value", edited(given(10, b'"Ann\rMarie"'), ragged(30)),
         "applied_with_errors", "row_width", USERS, 30),
    Case("a lone CR inside the header", edited((1, lambda h: h.replace(b",role", b",ro\rle"))),
         "failed", "header_invalid", USERS, 1),
    Case("a header ended by CR, rows by LF", edited((1, lambda h: h + b"\r" + lines()[1])),
         "failed", "header_invalid", USERS, 1),
    # Cut uploads.
    Case("cut in the middle of a row", cut_at(60, 50), "failed", "file_truncated", USERS, 60,
         imported="failed"),
    Case("cut after a delimiter", cut_at(60, lines()[59].index(b",") + 1), "failed",
         "file_truncated", USERS, 60),
    Case("cut inside a quoted value",
         lambda: users(b"\n".join(lines()[:79]) + b"\n" + lines()[79][:200] + b',"Ann'),
         "failed", "file_truncated", USERS, 80),
    Case("cut inside a UTF-8 character",
         lambda: users(SCHOOL[USERS] + "x,active,2025-09-01,true,o,student,u,,Zoë".encode()[:-1]),
         "failed", "file_truncated", USERS, 81),
    Case("complete last row, no final line break", lambda: users(SCHOOL[USERS].rstrip(b"\n")),
         "applied"),
    Case("an end-of-file mark (Ctrl-Z)", lambda: users(SCHOOL[USERS] + b"\x1a"), "applied"),
    # Encodings: never a guess.
    Case("UTF-8 with a byte order mark", encoded("utf-8-sig"), "applied"),
    Case("UTF-16LE with a byte order mark", encoded("utf-16"), "applied"),
    Case("UTF-16BE with a byte order mark", encoded("utf-16-be", b"\xfe\xff"), "applied"),
    Case("UTF-16LE without a byte order mark", encoded("utf-16-le"), "applied",
         "encoding_utf16_no_bom", USERS),
    Case("UTF-16BE without a byte order mark", encoded("utf-16-be"), "applied",
         "encoding_utf16_no_bom", USERS),
    Case("cp1252", edited(given(5, "Müller".encode("cp1252"))), "applied", imported="applied"),
    *[
        Case(f"cp1252 with 0x{b:02X}, which it leaves undefined", cp1252_with(b), "failed",
             "encoding_invalid", USERS, 9, imported="failed" if b == 0x81 else "")
        for b in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
    ],
    Case("UTF-8 with one bad byte", edited(given(5, "Cýrus".encode()), given(30, b"Ma\xe9lle")),
         "applied_with_errors", "utf8_invalid", USERS, 30, imported="applied_with_errors"),
    Case("UTF-8 with a bad byte before any UTF-8",
         edited(given(5, b"Ma\xe9lle"), given(60, "Cýrus".encode())), "applied_with_errors",
         "utf8_invalid", USERS, 5),
    Case("a bad byte in the header", edited((1, lambda h: h + "Zoë".encode() + b"\xff")),
         "failed", "encoding_invalid", USERS, 1),
    Case("binary zeros", lambda: users(bytes(8192)), "failed", "file_binary", USERS),
    # Values: control characters and lengths (keep's policy).
    Case("a NUL byte after a name", edited((20, appended(GIVEN, b"\x00"))), "applied",
         "control_character_removed", USERS, 20, imported="no_changes"),
    Case("a NUL byte in an ID", edited((21, lambda line: b"\x00" + line)),
         "applied_with_errors", "id_invalid", USERS, 21),
    Case("ANSI escapes in a name", edited(given(22, b"\x1b[31mAnn\x1b[0m")), "applied",
         "control_character_removed", USERS, 22),
    Case("a bidi override in a name", edited(given(23, "\u202eAnn".encode())), "applied",
         "control_character_removed", USERS, 23),
    Case("a name of 200,000 characters", edited(given(24, b"A" * 200_000)), "applied_with_errors",
         "value_too_long", USERS, 24),
    # Zips (docs/reference/stack.md section 9, item 21).
    Case("random bytes named .zip", upload_zip(RANDOM), "failed", "zip_invalid", "upload.zip"),
    Case("an empty file named .zip", upload_zip(b""), "failed", "zip_invalid", "upload.zip"),
    Case("a zip cut in half", upload_zip(lambda: zipped()[: len(zipped()) // 2]), "failed",
         "zip_invalid", "upload.zip"),
    Case("a member with a bad CRC", upload_zip(bad_crc), "failed", "zip_member_damaged", USERS,
         imported="failed"),
    Case("a member that says it is smaller", upload_zip(declared_size(-100, zipfile.ZIP_STORED)),
         "failed", "zip_member_damaged", USERS),
    Case("a deflated member that says it is smaller",
         upload_zip(declared_size(-100, zipfile.ZIP_DEFLATED)), "failed", "zip_member_damaged",
         USERS),
    Case("a deflated member that says it is larger",
         upload_zip(declared_size(100, zipfile.ZIP_DEFLATED)), "applied"),
    Case("a compression method nobody knows", upload_zip(unsupported_method), "failed",
         "zip_member_damaged", USERS),
    Case("macOS's __MACOSX and .DS_Store", upload_zip(macos), "applied", "zip_member_ignored",
         "upload.zip", imported="no_changes"),
    Case("a member up a folder (../)",
         upload_zip(lambda: zipped({**SCHOOL, "../x.csv": b"a\n"})), "failed",
         "zip_member_refused", "upload.zip"),
    Case("a member with an absolute path",
         upload_zip(lambda: zipped({**SCHOOL, "/etc/x.csv": b"a\n"})), "failed",
         "zip_member_refused", "upload.zip"),
    Case("a member with a drive letter",
         upload_zip(lambda: zipped({**SCHOOL, "C:\\x.csv": b"a\n"})), "failed",
         "zip_member_refused", "upload.zip"),
    Case("a symbolic link",
         upload_zip(lambda: zipped({**SCHOOL, "x.csv": b"/etc/passwd"}, infos={"x.csv": LINK})),
         "failed", "zip_member_refused", "upload.zip"),
    Case("a folder entry", upload_zip(lambda: zipped({**SCHOOL, "more/": b""})), "failed",
         "zip_member_refused", "upload.zip"),
    Case("a name twice", upload_zip(lambda: zipped(again=(USERS,))), "failed",
         "zip_member_refused", "upload.zip"),
    Case("a zip in the zip", upload_zip(lambda: zipped({**SCHOOL, "inner.zip": zipped()})),
         "failed", "zip_member_refused", "upload.zip"),
    Case("an encrypted member",
         upload_zip(encrypted), "failed",
         "zip_member_refused", "upload.zip"),
    Case("overlapping entries", upload_zip(overlapping), "failed", "zip_member_refused",
         "upload.zip"),
    Case("a zip bomb", upload_zip(bomb), "failed", "zip_ratio", "upload.zip"),
    Case("more than the total size allowed", upload_zip(zipped), "failed", "zip_too_large",
         "upload.zip", settings={"ZIP_MAX_TOTAL_BYTES": 100_000}),
    Case("more members than allowed", upload_zip(zipped), "failed", "zip_too_many_members",
         "upload.zip", settings={"ZIP_MAX_MEMBERS": 4}),
    Case("a zip sent with a loose file", lambda: {"upload.zip": zipped(), USERS: SCHOOL[USERS]},
         "failed", "zip_mixed", "upload.zip"),
    Case("a stray quote in a zipped users.csv",
         upload_zip(lambda: zipped(edited(given(40, b'"Amina'))())), "applied_with_errors",
         "unterminated_quote", USERS, 40, imported="no_changes"),
    Case("a zipped users.csv cut mid-row", upload_zip(lambda: zipped(cut_at(60, 50)())),
         "failed", "file_truncated", USERS, 60),
]  # fmt: skip


IMPORTED = [c for c in CASES if c.imported]


def write(folder: Path, upload: Upload) -> Path:
    """The upload on disk: its zip, or the folder of its loose files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in upload.items():
        (folder / name).write_bytes(data)
    return folder / "upload.zip" if list(upload) == ["upload.zip"] else folder


def status(checked) -> str:
    if checked.fatal:
        return "failed"
    if any(f.severity == ERROR for f in checked.log.findings):
        return "applied_with_errors"
    return "applied"


def found(case: Case, issues) -> list:
    """The issues that are the case's finding, as (code, file, line) tuples."""
    return [
        (code, file, line)
        for code, file, line in issues
        if code == case.code
        and (not case.file or file == case.file)
        and (case.line is None or line == case.line)
    ]


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 60 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check(case: Case, tmp_path, settings):
    from rosterdrop.ingest.reader import expand

    for name, value in case.settings.items():
        setattr(settings, name, value)
    path = write(tmp_path / "upload", case.build())
    checked = check(expand(path), Settings.named(None))
    issues = [(f.code, f.file, f.line) for f in checked.log.all()]
    problems = [(f.code, f.file, f.line) for f in checked.log.all() if f.severity != "warning"]
    assert status(checked) == case.status, problems[:5]
    if case.code:
        assert found(case, issues), issues[:5]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", IMPORTED, ids=[c.name for c in IMPORTED])
def test_import(case: Case, district, tmp_path, settings):
    """Over the small school in the roster: the sync's status, its issue, and nothing lost."""
    from rosterdrop.ingest.syncs import import_path
    from rosterdrop.roster.models import MODELS, records

    for name, value in case.settings.items():
        setattr(settings, name, value)
    assert import_path(district, SCHOOL_SMALL).status == "applied"
    before = {e: records(district, e).filter(status="active").count() for e in MODELS}
    sync = import_path(district, write(tmp_path / "upload", case.build()))
    issues = list(sync.issues.values_list("code", "file", "line"))
    assert sync.status == case.imported, issues[:5]
    if case.code:
        assert found(case, issues), issues[:5]
    after = {e: records(district, e).filter(status="active").count() for e in MODELS}
    assert all(after[e] >= before[e] for e in MODELS), (before, after)
