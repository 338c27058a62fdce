"""An incremental read (ingest/lines.py): the lines of a full file that its last read mapped to
records the roster holds as they are are not read again, and the sync finds the same issues,
plan and roster as a full read of the same files."""

import codecs
import csv
import dataclasses
import io
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest
from django.conf import settings as django_settings
from django.db import connection
from helpers import rows_through
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rosterdrop import formats
from rosterdrop.districts.models import District
from rosterdrop.formats.spec import Mode
from rosterdrop.ingest import decode, index_builds, keys, line_builds, lines
from rosterdrop.ingest import read as read_module
from rosterdrop.ingest.columns import HASH, KEYHASH, LINE
from rosterdrop.ingest.findings import FindingLog
from rosterdrop.ingest.reader import _hashes
from rosterdrop.ingest.syncs import import_path
from rosterdrop.ingest.validate import RowChecker
from rosterdrop.roster import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def read(monkeypatch) -> Counter:
    """Rows read per file: parsed and prepared (renames, statuses), checked or vouched for."""
    return rows_through(monkeypatch, "prepare")


@pytest.fixture
def hashed(monkeypatch) -> Counter:
    """Lines hashed per file, by its header (read.parse_lines): a file taken whole has none."""
    counts: Counter = Counter()
    real = read_module.parse_lines

    def counted(piece, header, sep, known):
        counts[",".join(header)] += piece.lines
        return real(piece, header, sep, known)

    monkeypatch.setattr(read_module, "parse_lines", counted)
    return counts


def _header(path: Path) -> str:
    return path.read_text().splitlines()[0]


def _issues(sync) -> list[tuple]:
    return sorted(
        sync.issues.values_list("severity", "code", "file", "line", "column", "value", "message")
    )


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _manifest_in_other_bytes(school: Path) -> None:
    """The manifest's line ends switched: the files are read again, not recognised as re-sent."""
    manifest = school / "manifest.csv"
    text = manifest.read_bytes()
    crlf = b"\r\n" in text
    manifest.write_bytes(text.replace(b"\r\n", b"\n") if crlf else text.replace(b"\n", b"\r\n"))


def _imported(district: District, school: Path, built: bool = False) -> None:
    """Imported, then read again as the roster vouches for it: the read that keeps its lines
    (a first import keeps none; `built`: the build after its sync does, and this read finds
    them)."""
    import_path(district, school)
    if built:
        index_builds.build(district)
    _manifest_in_other_bytes(school)
    assert import_path(district, school).status == "no_changes"


def test_a_first_import_keeps_its_lines_after_its_sync(district, school, read):
    """A first import reads every row checked first, keeping no lines; the build after its
    sync (with its SIS search index) keeps them: the next read of the same records, in other
    bytes, parses none of them."""
    assert import_path(district, school).status == "applied"
    assert not _kept(district)
    index_builds.build(district)
    assert _kept(district)
    _manifest_in_other_bytes(school)
    read.clear()
    assert import_path(district, school).status == "no_changes"
    assert read["enrollments.csv"] == read["classes.csv"] == read["demographics.csv"] == 0


def test_a_file_sent_again_as_it_was_is_taken_whole(district, school, read, hashed):
    """A file sent again byte for byte, whose kept lines the roster all holds as they are, is
    taken whole: its lines are not even hashed. One changed is read line by line (only the
    line that differs parsed), the others still taken whole."""
    enrollments, classes = school / "enrollments.csv", school / "classes.csv"
    _imported(district, school, built=True)
    _manifest_in_other_bytes(school)
    hashed.clear()
    read.clear()
    assert import_path(district, school).status == "no_changes"
    assert hashed[_header(enrollments)] == hashed[_header(classes)] == 0
    assert read["enrollments.csv"] == read["classes.csv"] == 0
    _end_dates(school, range(3, 4), b"2026-06-09")
    hashed.clear()
    read.clear()
    assert import_path(district, school).status == "applied"
    assert hashed[_header(enrollments)] == len(_lines(enrollments)) - 1
    assert read["enrollments.csv"] == 1
    assert hashed[_header(classes)] == 0


def test_a_file_taken_whole_finds_what_a_full_read_finds(district, school, read, hashed):
    """A file taken whole goes to the checks across rows as its records at their lines: a line
    repeated (its record held all the same) is told as a full read tells it, on the same lines,
    and the file's rows are counted."""
    enrollments = school / "enrollments.csv"
    rows = _lines(enrollments)
    enrollments.write_bytes(b"".join([*rows[:5], rows[2], *rows[5:], rows[9]]))
    first = import_path(district, school)
    dupes = {i[3] for i in _issues(first) if i[1] == "duplicate_id"}
    assert dupes == {6, len(rows) + 2}
    index_builds.build(district)
    _manifest_in_other_bytes(school)
    hashed.clear()
    read.clear()
    again = import_path(district, school)
    assert hashed[_header(enrollments)] == read["enrollments.csv"] == 0  # taken whole
    assert again.status == "no_changes"
    assert _issues(again) == _issues(first)
    assert again.files == first.files


def test_a_file_feeding_several_entities_sent_again_as_it_was_is_taken_whole(
    district, school, read
):
    """users.csv makes users, their roles and agents: the build after the sync keeps its
    records once checked (lines.Checked); sent again byte for byte, every record held as it
    is, it is taken whole, no row of it read, with the same issues and counts as a full read.
    Changed (one role's org), it is read in full, and its records kept again after its sync."""
    users = school / "users.csv"
    first = import_path(district, school)
    index_builds.build(district)
    assert any(p.name.endswith(".checked") for p in _kept_paths(district, "*.checked"))
    for _ in range(2):  # then from the records the first of these linked under its token
        _manifest_in_other_bytes(school)
        read.clear()
        again = import_path(district, school)
        assert again.status == "no_changes"
        assert read["users.csv"] == 0
        assert _issues(again) == _issues(first)
        assert again.files == first.files
    rows = _lines(users)
    rows[4] = rows[4].replace(b",student,", b",teacher,")
    users.write_bytes(b"".join(rows))
    read.clear()
    assert import_path(district, school).status == "applied"
    assert read["users.csv"] == 1  # line by line (lines.CheckedLines): the line changed
    index_builds.build(district)
    _manifest_in_other_bytes(school)
    read.clear()
    assert import_path(district, school).status == "no_changes"
    assert read["users.csv"] == 0


def test_a_line_whose_records_the_roster_does_not_all_hold_is_read(district, school, read):
    """users.csv read line by line (lines.CheckedLines): a line found among its last checked
    records whose user the roster holds as it is but not its role (changed by a sync since
    whose build has not run yet: its records not kept) is read anew, not taken; a line whose
    records the roster kept as they were (a row of that sync refused) is taken."""
    users = school / "users.csv"
    base = _lines(users)
    import_path(district, school)
    index_builds.build(district)
    assert any(p.name.endswith(".lines.arrow") for p in _kept_paths(district))
    rows = list(base)
    rows[4] = rows[4].replace(b",student,", b",teacher,")
    rows[6] = rows[6].replace(b",student,", b",nurse,").replace(b",teacher,", b",nurse,")
    users.write_bytes(b"".join(rows))
    read.clear()
    changed = import_path(district, school)
    assert changed.status == "applied_with_errors" and read["users.csv"] == 2
    users.write_bytes(b"".join(base))
    read.clear()
    assert import_path(district, school).status == "applied"
    assert read["users.csv"] == 1  # line 5: its role not held; line 7 held as it was
    full = District.objects.create(slug="full", name="full", format="oneroster-1.1")
    import_path(full, school)
    assert _dump(district) == _dump(full)


def test_a_file_feeding_several_entities_keeps_the_lines_its_checks_told_nothing_about(
    district, school, read
):
    """A real export's users.csv gets a few rows wrong every night: a boolean and a role in
    another letter case (told, and taken as read), a user with no school (refused, its records
    kept as they were). The build after the sync keeps the checked records and lines of every
    other row (lines.Checked.told), so the next night's file, one line changed, reads that line
    and the rows told about, telling them again, not the whole file; the same bytes again are
    not taken whole (the rows told about would not be told) but read line by line. Status,
    issues and roster as a full read's, each night."""
    users = school / "users.csv"
    rows = _lines(users)
    rows[3] = rows[3].replace(b",true,", b",TRUE,", 1)
    rows[5] = rows[5].replace(b",student,", b",Student,", 1)
    _set_cells(rows, 7, {4: ""})
    users.write_bytes(b"".join(rows))
    full = District.objects.create(slug="full", name="full", format="oneroster-1.1")
    first = import_path(district, school)
    codes = {i[1] for i in _issues(first) if i[2] == "users.csv"}
    assert {"boolean_normalised", "enum_normalised", "required_missing"} <= codes
    import_path(full, school)
    index_builds.build(district)
    [stamp] = [lines.Checked.read(path) for path in _kept_paths(district, "*.checked")]
    assert stamp is not None and stamp.told == 3 and stamp.rows == len(rows) - 1
    rows[10] = rows[10].replace(b",,,,", b",,555-0100,,", 1)
    users.write_bytes(b"".join(rows))
    for night, expected in enumerate((4, 3)):  # the line changed and the three told about
        if night:
            index_builds.build(district)
            _manifest_in_other_bytes(school)
        read.clear()
        a = import_path(district, school)
        assert read["users.csv"] == expected
        _read_in_full(full)
        b = import_path(full, school)
        assert (a.status, a.changes, a.files) == (b.status, b.changes, b.files)
        assert _issues(a) == _issues(b)
        assert _dump(district) == _dump(full)


def test_a_row_refused_under_a_new_rule_is_refused_again(district, school, monkeypatch):
    """A rule changed refuses rows whose records stay as they were (ingest/kept.py): the roster
    does not vouch for those records under the new rule, so the same rows sent again the next
    night, in other bytes, are checked and refused again, as a full read refuses them."""
    import_path(district, school)
    monkeypatch.setitem(formats.FORMATS, "oneroster-1.1", _without_teachers())
    first = import_path(district, school)
    assert "enum_invalid" in {i[1] for i in _issues(first) if i[2] == "enrollments.csv"}
    index_builds.build(district)
    _manifest_in_other_bytes(school)
    again = import_path(district, school)
    assert _issues(again) == _issues(first)


def test_a_row_skipped_for_a_broken_reference_leaves_the_entity_vouched(
    district, school, monkeypatch
):
    """A row skipped for what the checks across rows find (a class that is not sent) keeps
    its record as it was, but the next read checks that again over every row: after the
    first read in a new context, the roster vouches for the entity all the same, and only
    the row that maps to no record it holds is checked."""
    checked = rows_through(monkeypatch, "check_prepared")
    import_path(district, school)
    enrollments = _lines(school / "enrollments.csv")
    cells = enrollments[3].split(b",")
    cells[3] = b"no-such-class"
    enrollments[3] = b",".join(cells)
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))
    district.fallback_encoding = "latin-1"  # another context: every row checked once
    district.save()
    first = import_path(district, school)
    assert ("error", "reference_missing", "enrollments.csv", 4) in {i[:4] for i in _issues(first)}
    _manifest_in_other_bytes(school)
    checked.clear()
    again = import_path(district, school)
    assert checked["enrollments.csv"] == 1
    assert _issues(again) == _issues(first)


def test_a_file_whose_kept_lines_the_roster_does_not_all_hold_is_read(
    district, school, read, hashed
):
    """Its kept lines are every line of the file (stamped), but one's record is not held (its
    row was skipped for its own error): the file sent again as it was is read line by line,
    that line checked again and told."""
    classes = school / "classes.csv"
    rows = _lines(classes)
    cells = rows[2].split(b",")
    cells[0] = b""  # no sourcedId
    rows[2] = b",".join(cells)
    classes.write_bytes(b"".join(rows))
    first = import_path(district, school)
    assert ("error", "required_missing", "classes.csv", 3) in {i[:4] for i in _issues(first)}
    index_builds.build(district)
    stem = lines.Layout("", "classes.csv", (), ",", "").name.removesuffix(".arrow")
    assert any(path.name == f"{stem}.whole" for path in _kept_paths(district, "*.whole"))
    _manifest_in_other_bytes(school)
    hashed.clear()
    read.clear()
    again = import_path(district, school)
    assert hashed[_header(classes)] == len(rows) - 1
    assert read["classes.csv"] == 1
    assert _issues(again) == _issues(first)


def test_lines_are_kept_after_a_sync_only_for_the_roster_it_left(district, school, read):
    """A build after a sync whose roster another sync has replaced since keeps nothing (it
    would be for a roster no read starts from); nor does one for files whose lines the read
    kept (they stay as they are)."""
    import_path(district, school)
    _end_dates(school, range(3, 4), b"2026-06-09")
    assert import_path(district, school).status == "applied"  # its read kept its lines
    index_builds.build(district)
    [later, first] = district.syncs.order_by("-pk")[:2]
    assert later.roster_token != first.roster_token
    assert set(_kept(district)) and all(
        path.parent.name == f"t{later.roster_token}" for path in _kept_paths(district)
    )
    before = _kept(district)
    _manifest_in_other_bytes(school)
    assert import_path(district, school).status == "no_changes"
    index_builds.build(district)
    assert {name: _kept(district).get(name) for name in before} == before


def test_lines_kept_hashed_another_way_are_not_opened(district, school, read, monkeypatch):
    """How a line is hashed is part of its layout (lines.HASHING): lines kept hashed another
    way would never be found, so their kept file is not opened and the file is read in full."""
    _imported(district, school)
    monkeypatch.setattr(lines, "HASHING", lines.HASHING + 1)
    _end_dates(school, range(3, 4), b"2026-06-09")
    read.clear()
    assert import_path(district, school).status == "applied"
    assert read["enrollments.csv"] == len(_lines(school / "enrollments.csv")) - 1


def test_only_the_lines_that_differ_are_read(district, school, read):
    _imported(district, school)
    enrollments = _lines(school / "enrollments.csv")
    enrollments[7] = enrollments[7].replace(b"2026-06-10", b"2026-13-45")  # a bad end date
    enrollments[3], enrollments[20] = enrollments[20], enrollments[3]  # moved
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))
    classes = _lines(school / "classes.csv")
    (school / "classes.csv").write_bytes(b"".join(classes[:1] + classes[1:][::-1]))
    read.clear()
    again = import_path(district, school)
    assert again.status == "applied"
    assert read["enrollments.csv"] == 1
    assert read["classes.csv"] == 0
    # Issues name the new file's lines.
    assert ("warning", "date_invalid", "enrollments.csv", 8, "endDate", "2026-13-45") in {
        i[:6] for i in _issues(again)
    }


@pytest.mark.parametrize(
    "start, status, removed",
    [
        ("x\u0680", "applied_with_errors", 1),  # the line's old ID is not in the file
        ("x\u0001", "no_changes", 0),  # a control character: its line removes nothing
    ],
)
def test_a_changed_line_that_starts_as_compressed_data_does_is_read(
    district, school, start, status, removed
):
    """The changed lines are parsed apart from their piece: bytes that start as zlib data do
    (0x78 0xDA, 0x78 0x01) were inflated by polars, and the sync failed ("corrupt deflate
    stream"). They are read as the text they are (rosterdrop/polars_csv.py): here an ID the
    rules refuse, found on its line, and every other enrollment as it was."""
    _imported(district, school)
    active = "select count(*) from roster_enrollment where status = 'active'"
    with connection.cursor() as cur:
        cur.execute(active)
        (before,) = cur.fetchone()
    enrollments = _lines(school / "enrollments.csv")
    old_id = enrollments[5].split(b",")[0]
    enrollments[5] = f"{start}-enrollment".encode() + enrollments[5][len(old_id) :]
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))
    again = import_path(district, school)
    assert again.status == status, again.message
    found = {i[:5] for i in _issues(again) if i[0] == "error"}
    assert found == {("error", "id_invalid", "enrollments.csv", 6, "sourcedId")}
    with connection.cursor() as cur:
        cur.execute(active)
        assert cur.fetchone() == (before - removed,)


def test_a_changed_layout_is_read_in_full(district, school, read):
    _imported(district, school)
    enrollments = _lines(school / "enrollments.csv")
    # The same lines under other names: each row says something else.
    enrollments[0] = enrollments[0].replace(b"beginDate,endDate", b"endDate,beginDate")
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))
    read.clear()
    import_path(district, school)
    assert read["enrollments.csv"] == len(enrollments) - 1


def test_lines_kept_in_another_format_are_read_in_full_and_kept_anew(district, school, read):
    """Kept lines an earlier version wrote (an Arrow file, not a stream) are not taken: the
    file is read in full, and its lines kept again for the next read."""
    _imported(district, school)
    kept = list((django_settings.DATA_DIR / "lines").glob("*/t*/*.arrow"))
    assert kept
    for path in kept:
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all().unify_dictionaries()
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    enrollments = _lines(school / "enrollments.csv")
    for line, end in ((3, b"2026-06-09"), (4, b"2026-06-08")):
        enrollments[line] = enrollments[line].replace(b"2026-06-10", end)
        (school / "enrollments.csv").write_bytes(b"".join(enrollments))
        read.clear()
        assert import_path(district, school).status == "applied"
        # Read in full at first; then only the line that differs.
        assert read["enrollments.csv"] == (len(enrollments) - 1 if line == 3 else 1)


def test_empty_kept_lines_are_read_in_full(district, school, read):
    """A kept file left empty (a disk that filled up) cannot be mapped: the file is read in
    full, never a failed import."""
    _imported(district, school)
    kept = list((django_settings.DATA_DIR / "lines").glob("*/t*/*.arrow"))
    assert kept
    for path in kept:
        path.write_bytes(b"")
    enrollments = _lines(school / "enrollments.csv")
    enrollments[3] = enrollments[3].replace(b"2026-06-10", b"2026-06-09")
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))
    read.clear()
    assert import_path(district, school).status == "applied"
    assert read["enrollments.csv"] == len(enrollments) - 1


def _kept_paths(district: District, pattern: str = "*.arrow") -> list[Path]:
    folder = django_settings.DATA_DIR / "lines" / str(district.pk)
    return list(folder.glob(f"t*/{pattern}"))


def _kept(district: District) -> dict[str, int]:
    """The files the roster's kept lines are in now (one token's folder): name -> inode."""
    return {path.name: path.stat().st_ino for path in _kept_paths(district)}


def _end_dates(school: Path, lines: range, end: bytes) -> None:
    enrollments = _lines(school / "enrollments.csv")
    for line in lines:
        enrollments[line] = enrollments[line].replace(b"2026-06-10", end)
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))


def test_found_lines_are_not_written_again(district, school, read):
    """The kept lines of a file whose lines were found stay as they are, linked under the new
    roster token: those of a file read anew in part, with that part's lines beside them in a
    part of their own, and the next read finds lines in both."""
    _imported(district, school)
    before = _kept(district)
    _end_dates(school, range(3, 4), b"2026-06-09")
    read.clear()
    assert import_path(district, school).status == "applied"
    assert read["enrollments.csv"] == 1
    after = _kept(district)
    assert {name: after.get(name) for name in before} == before  # not one written again
    [part] = set(after) - set(before)
    assert part.endswith("-1.arrow")
    _manifest_in_other_bytes(school)
    read.clear()
    assert import_path(district, school).status == "no_changes"
    assert read["enrollments.csv"] == read["classes.csv"] == 0
    assert _kept(district) == after


def test_kept_lines_are_written_again_in_one_part(district, school, read, monkeypatch):
    """Kept lines in MAX_PARTS parts already, or whose records the roster mostly no longer
    holds as they are, are written again in one part, with what the read found."""
    monkeypatch.setattr(lines, "MAX_PARTS", 3)
    _imported(district, school)
    body = len(_lines(school / "enrollments.csv")) - 1

    def changed(first: int, last: int) -> list[str]:
        """The enrollments' parts after an import that changed these lines' records."""
        _end_dates(school, range(first, last), b"2026-06-09")
        read.clear()
        assert import_path(district, school).status == "applied"
        assert read["enrollments.csv"] == last - first
        stem = lines.Layout("", "enrollments.csv", (), ",", "").name.removesuffix(".arrow")
        return sorted(name for name in _kept(district) if name.startswith(stem))

    assert len(changed(1, 2)) == 2
    assert len(changed(2, 3)) == 3
    assert len(changed(3, 4)) == 1  # MAX_PARTS
    assert len(changed(4, body // 2)) == 2  # found all but the line read anew: linked
    assert len(changed(body // 2, body // 2 + 1)) == 1  # under MOST of the kept held
    _manifest_in_other_bytes(school)
    read.clear()
    assert import_path(district, school).status == "no_changes"
    assert read["enrollments.csv"] == 0


def _dump(district: District) -> list[tuple]:
    with store.bulk_connection() as cur:
        return sorted(store.snapshot(cur, district.pk).drop("_keyhash", store.ROW_ID).rows())


# Edits of one file's lines (header = 0): what a nightly export does to them.
ROW = st.integers(min_value=1, max_value=10_000)
EDITS = st.one_of(
    st.tuples(st.just("remove"), ROW),
    st.tuples(st.just("move"), ROW, ROW),
    st.tuples(st.just("repeat"), ROW, ROW),  # a duplicate line (its key twice)
    st.tuples(st.just("add"), ROW, st.integers(0, 99)),  # a copy under a new ID
    st.tuples(
        st.just("change"),
        ROW,
        st.integers(0, 20),
        st.sampled_from(["", "x", "TRUE", "2025-13-45", "tobedeleted", "Zoë", '"a\nb"', "a,b"]),
    ),
    st.tuples(st.just("take"), ROW, ROW, st.integers(0, 20)),  # a value of another line
)
# Edits of users.csv's parts that make other entities than users (lines.Checked): its list of
# schools (a role each: one added, removed or repeated on an unchanged user, a school that is
# not sent, none), its role, its agents (users.csv makes users, roles and agents).
SCHOOL = "31dfb99b-6c85-47ac-a549-524e786d8327"
SECOND = "second-school"
SCHOOLS = st.sampled_from(
    [SCHOOL, f"{SCHOOL},{SECOND}", f"{SECOND},{SCHOOL}", f"{SCHOOL},{SCHOOL}", SECOND,
     f"{SCHOOL},no-such-school", "", f"{SCHOOL}, {SECOND}", f"{SCHOOL},"]
)  # fmt: skip
USER_EDITS = st.one_of(
    st.tuples(st.just("schools"), ROW, SCHOOLS),
    st.tuples(st.just("role"), ROW, st.sampled_from(["teacher", "student", "Teacher", "nurse"])),
    st.tuples(st.just("agents"), ROW, ROW, st.sampled_from(["", "one", "two", "no-such-user"])),
)
# Changes of a whole file, or of how the district reads: an incremental read must fall back.
WHOLE = st.sampled_from(["", "", "", "crlf", "header", "cp1252", "bom", "encoding setting", "rule"])
FILES = ["enrollments.csv", "classes.csv", "users.csv", "demographics.csv", "courses.csv"]


def _edit(lines: list[bytes], edit: tuple) -> None:
    body = len(lines) - 1
    if body < 2:
        return
    at = 1 + edit[1] % body
    match edit:
        case ("remove", _):
            del lines[at]
        case ("move", _, other):
            to = 1 + other % body
            lines.insert(to, lines.pop(at))
        case ("repeat", _, other):
            lines.insert(1 + other % body, lines[at])
        case ("add", _, n):
            cells = lines[at].split(b",")
            cells[0] = b"added-%d" % n
            lines.insert(at, b",".join(cells))
        case ("change", _, column, value):
            cells = lines[at].rstrip(b"\n").split(b",")
            cells[column % len(cells)] = value.encode()
            lines[at] = b",".join(cells) + b"\n"
        case ("schools", _, value):
            _set_cells(lines, at, {4: value})
        case ("role", _, value):
            _set_cells(lines, at, {5: value})
        case ("agents", _, other, how):
            ids = [line.split(b",")[0].decode() for line in lines[1:]]
            theirs = ids[other % len(ids)]
            value = {"one": theirs, "two": f"{theirs},{ids[(other + 1) % len(ids)]}"}
            _set_cells(lines, at, {15: value.get(how, how)})
        case ("take", _, other, column):
            cells = lines[at].rstrip(b"\n").split(b",")
            theirs = lines[1 + other % body].rstrip(b"\n").split(b",")
            i = column % min(len(cells), len(theirs))
            cells[i] = theirs[i]
            lines[at] = b",".join(cells) + b"\n"


def _set_cells(lines: list[bytes], at: int, values: dict[int, str]) -> None:
    """Cells of a line set, as a CSV writer writes them (a list of IDs quoted)."""
    [cells] = csv.reader([lines[at].decode()])
    for column, value in values.items():
        if column < len(cells):
            cells[column] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(cells)
    lines[at] = out.getvalue().encode()


def _second_school(school: Path) -> None:
    """A second school, and users at both (two roles each) or with agents: users.csv then
    makes users, roles and agents from most of its lines, in several ways."""
    orgs = _lines(school / "orgs.csv")
    orgs.append(orgs[1].replace(SCHOOL.encode(), SECOND.encode()).replace(b",1000,", b",1001,"))
    (school / "orgs.csv").write_bytes(b"".join(orgs))
    users = _lines(school / "users.csv")
    ids = [line.split(b",")[0].decode() for line in users[1:]]
    for at in range(2, 14):
        _set_cells(users, at, {4: f"{SCHOOL},{SECOND}"})
    for at in range(10, 20, 3):
        _set_cells(users, at, {15: f"{ids[0]},{ids[at]}"})
    (school / "users.csv").write_bytes(b"".join(users))


def _whole(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "crlf":
        path.write_bytes(data.replace(b"\n", b"\r\n"))
    elif how == "header":  # the first two columns swapped: the same records in another layout
        lines = [line.split(b",", 2) for line in data.splitlines(keepends=True)]
        path.write_bytes(b"".join(b",".join([c[1], c[0], *c[2:]]) for c in lines))
    elif how == "cp1252":
        path.write_bytes(data.decode("utf-8").encode("cp1252", errors="replace"))
    elif how == "bom":
        path.write_bytes(codecs.BOM_UTF8 + data)


@pytest.fixture
def pair(db, school, monkeypatch):
    """Two districts with the same roster: one reads incrementally, the other in full (kept
    lines written a few at a time: several batches to take, in several parts)."""
    monkeypatch.setattr(lines, "KEEP_ROWS", 5)
    _second_school(school)
    districts = [
        District.objects.create(slug=slug, name=slug, format="oneroster-1.1")
        for slug in ("incremental", "full")
    ]
    for district in districts:
        _imported(district, school, built=district.slug == "incremental")
        _manifest_in_other_bytes(school)
    return districts


@pytest.fixture
def users_given(monkeypatch) -> dict[str, list]:
    """What the checks across rows are given of users.csv's records (users, roles, agents),
    in order (line, key hash, content hash), by the imports since it was last cleared."""
    records: dict[str, list] = {}
    real = keys.EntityRows.add

    def add(self, frame, file, derived=False):
        if file == "users.csv":
            records.setdefault(self.entity, []).extend(frame.select(LINE, KEYHASH, HASH).rows())
        return real(self, frame, file, derived)

    monkeypatch.setattr(keys.EntityRows, "add", add)
    return records


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # roles changed by the earlier copy on lines sent as the base had them
    edits=[],
    users=[("schools", 30, "")],
    whole=("enrollments.csv", ""),
    earlier=[("role", 3, "teacher"), ("schools", 5, SECOND)],
    told=50,
    built=False,
    warned=None,
)
@example(  # the earlier copy's lines kept but the one refused; a row told about, then taken
    edits=[],
    users=[("role", 8, "teacher")],
    whole=("enrollments.csv", ""),
    earlier=[("role", 3, "teacher")],
    told=50,
    built=True,
    warned=20,
)
@given(
    edits=st.lists(st.tuples(st.sampled_from(FILES), EDITS), max_size=8),
    users=st.lists(USER_EDITS, max_size=4),
    whole=st.tuples(st.sampled_from(FILES), WHOLE),
    earlier=st.lists(USER_EDITS, min_size=1, max_size=3),
    told=ROW,
    built=st.booleans(),
    warned=st.none() | ROW,
)
def test_an_incremental_read_finds_what_a_full_read_finds(
    pair, users_given, school, tmp_path, edits, users, whole, earlier, told, built, warned
):
    """Both districts import the same mutated copy, one after the other (each roster moves on
    with it), then again in other bytes, twice: the same status, counts, issues and roster,
    the full one checking every row (`_read_in_full`). The incremental one's lines
    are also kept after each sync (ingest/line_builds.py), as serve and the workers do; before
    the last read they are all kept anew by such a build, so that every file whose lines the
    roster all holds is taken whole (lines.Whole), whatever its edits (repeated lines, broken
    references). users.csv, which makes users, roles and agents, has lines at two schools or
    with agents, and its lists of schools, roles and agents edited (a role added, removed or
    repeated on an unchanged user, a school not sent...): a copy of it the build kept as its
    checked records (lines.Checked) is taken whole where the roster holds them all, and read
    line by line otherwise (lines.CheckedLines), a line taken where the roster holds all its
    records: an `earlier` copy of users.csv with its own edits is imported first, a row of it
    `told` about (refused). Its build `built` keeps the records and lines of its other rows,
    which the next read finds; not built (its queue behind), the lines found are those of the
    base's records, against a roster that copy changed (a role, a school). A row of the copy
    sent may be `warned` about (a role in another letter case: told, and applied): its line is
    not kept by the builds after, and read (and told) each time. The records of users.csv
    given to the checks across rows are the full read's, in order. A rule of the format
    changed, or the encoding setting, and the incremental one reads in full."""
    incremental, full = pair
    before = tmp_path / "before"
    shutil.rmtree(before, ignore_errors=True)
    shutil.copytree(school, before)
    rows = _lines(before / "users.csv")
    for edit in earlier:
        _edit(rows, edit)
    _set_cells(rows, 1 + told % (len(rows) - 1), {5: "nurse"})
    (before / "users.csv").write_bytes(b"".join(rows))
    _both_import(pair, before, users_given, built)
    sent = tmp_path / "sent"
    shutil.rmtree(sent, ignore_errors=True)
    shutil.copytree(school, sent)
    for file, edit in [*edits, *(("users.csv", edit) for edit in users)]:
        lines = _lines(sent / file)
        _edit(lines, edit)
        (sent / file).write_bytes(b"".join(lines))
    if warned is not None:
        rows = _lines(sent / "users.csv")
        _set_cells(rows, 1 + warned % (len(rows) - 1), {5: "Student"})
        (sent / "users.csv").write_bytes(b"".join(rows))
    file, how = whole
    with pytest.MonkeyPatch.context() as patch:
        if how == "encoding setting":
            for district in pair:
                latin = district.fallback_encoding == "latin-1"
                district.fallback_encoding = "cp1252" if latin else "latin-1"
                district.save()
        elif how == "rule":
            patch.setitem(formats.FORMATS, "oneroster-1.1", _without_teachers())
        else:
            _whole(sent / file, how)
        # Then the same records in other bytes: every line found, in the kept lines just left
        # (linked, with a part of the lines read anew), then in lines all kept anew.
        for again in range(3):
            if again:
                _manifest_in_other_bytes(sent)
            if again == 2:
                _kept_anew(incremental)
            _both_import(pair, sent, users_given)


def _both_import(
    pair: list[District], sent: Path, given: dict[str, list], built: bool = True
) -> None:
    """The incremental district imports `sent` (its lines kept after the sync, as serve and
    the workers do, if `built`), then the full one reading every row checked: the same status,
    counts, issues, roster, and records of users.csv given to the checks across rows."""
    incremental, full = pair
    given.clear()
    a = import_path(incremental, sent)
    theirs = dict(given)
    # What a read did not keep (another encoding setting: every row checked) is kept after
    # its sync, in the build of its search index, for the read in other bytes.
    if built:
        index_builds.build(incremental)
    _read_in_full(full)
    given.clear()
    b = import_path(full, sent)
    assert (a.status, a.changes, a.files) == (b.status, b.changes, b.files)
    assert _issues(a) == _issues(b)
    assert _dump(incremental) == _dump(full)
    assert theirs == given


def test_a_found_line_inside_a_value_spanning_lines_is_read_as_a_full_read_reads_it(pair, school):
    """A line found among those kept (a row as it was) but inside a quoted value that the
    changed lines around it open and close: its piece is not plain, and is read as a full read
    reads it (the csv module: one row over three lines), not taken as the row it was."""
    incremental, full = pair
    enrollments = school / "enrollments.csv"
    rows = _lines(enrollments)
    end = b"\r\n" if rows[3].endswith(b"\r\n") else b"\n"
    rows[3] = rows[3].removesuffix(end).rsplit(b",", 1)[0] + b',"2026-06-10' + end
    rows[5] = b'later"' + rows[5][rows[5].index(b",") :]
    enrollments.write_bytes(b"".join(rows))
    a = import_path(incremental, school)
    _read_in_full(full)
    b = import_path(full, school)
    assert (a.status, a.changes, a.files) == (b.status, b.changes, b.files)
    assert _issues(a) == _issues(b)
    assert _dump(incremental) == _dump(full)


def _read_in_full(district: District) -> None:
    """The district's next read checks every row: its kept lines thrown away, and what its
    roster vouches for (ingest/vouched.py), so that a rule it would wrongly vouch for shows."""
    shutil.rmtree(django_settings.DATA_DIR / "lines" / str(district.pk), ignore_errors=True)
    for path in (django_settings.DATA_DIR / "roster").glob(f"{district.pk}-t*.vouched.json"):
        path.unlink()


def _without_teachers() -> formats.FormatSpec:
    """OneRoster 1.1 with a stricter rule: an enrollment's role may not be teacher."""
    spec = formats.FORMATS["oneroster-1.1"]

    def stricter(column):
        if column.name != "role" or "teacher" not in column.values:
            return column
        return dataclasses.replace(column, values=tuple(v for v in column.values if v != "teacher"))

    files = tuple(
        dataclasses.replace(f, columns=tuple(stricter(c) for c in f.columns))
        if f.name == "enrollments.csv"
        else f
        for f in spec.files
    )
    return dataclasses.replace(spec, files=files)


def _kept_anew(district: District) -> None:
    """The district's kept lines thrown away and kept again by the build after its last sync:
    every file's lines, each in one part, stamped (lines.Whole)."""
    shutil.rmtree(django_settings.DATA_DIR / "lines" / str(district.pk), ignore_errors=True)
    sync = district.syncs.filter(dry_run=False).exclude(roster_token=None).latest("pk")
    line_builds.keep(sync, [u for u in sync.uploads.all() if u.stored_path])


def test_kept_lines_are_written_in_batches_of_keep_rows(district, school, read, monkeypatch):
    """A file's kept lines are written KEEP_ROWS or more at a time, not a piece at a time (each
    batch carries its references' dictionaries, converted batch by batch by the next read),
    and found all the same."""
    monkeypatch.setattr(decode, "CHUNK", 1024)  # pieces of a few lines each
    monkeypatch.setattr(lines, "KEEP_ROWS", 100)
    _imported(district, school, built=True)
    body = len(_lines(school / "enrollments.csv")) - 1
    stem = lines.Layout("", "enrollments.csv", (), ",", "").name.removesuffix(".arrow")
    [path] = [p for p in _kept_paths(district) if p.name.startswith(stem)]
    with pa.OSFile(str(path)) as source:
        sizes = [batch.num_rows for batch in pa.ipc.open_stream(source)]
    assert sum(sizes) == body and len(sizes) > 1
    assert all(100 <= size < 120 for size in sizes[:-1])  # pieces of ~6 lines each
    _manifest_in_other_bytes(school)
    read.clear()
    assert import_path(district, school).status == "no_changes"
    assert read["enrollments.csv"] == 0


def test_rows_saying_a_status_are_counted_in_batches_whose_lines_were_not_hashed():
    """The build after a sync stamps how many of a bulk file's rows said a status
    (lines.Checked.with_status), which a later read taking the file whole reports as a full
    read does ("bulk_status_present"). A batch whose lines were not hashed (a piece the csv
    module read, a file with a unique column) counts its rows too, not none."""
    users = formats.get_format("oneroster-1.1").file("users.csv")
    assert users is not None and users.status_column
    header = [users.status_column, "sourcedId"]
    checker = RowChecker(users, header, Mode.BULK, FindingLog())
    status = ["active", "", "tobedeleted"]
    batch = pl.DataFrame({users.status_column: status, "sourcedId": list("abc")})
    same, hashes, sent = _hashes(checker, batch)
    assert hashes is None and same.columns == batch.columns
    assert sent is not None and sent.to_list() == [True, False, True]


def test_the_lines_told_about_are_every_row_told_about_and_kept_only_when_asked():
    """What a build keeping users.csv's checked lines leaves out (RowChecker.told_lines) is
    every row a finding was reported on, not only the samples the log keeps of a kind; a
    checker not asked to (a read's) keeps none (a file whose every row is warned about
    would hold each line's number to its end)."""
    users = formats.get_format("oneroster-1.1").file("users.csv")
    assert users is not None
    header = ["sourcedId", "enabledUser", "orgSourcedIds", "role", "username"]
    height = 250
    batch = pl.DataFrame(
        {
            "sourcedId": [f"u{i}" for i in range(height)],
            "enabledUser": ["TRUE" if i % 2 else "true" for i in range(height)],
            "orgSourcedIds": ["" if i == 7 else "school" for i in range(height)],
            "role": ["student"] * height,
            "username": [f"user{i}" for i in range(height)],
            LINE: pl.int_range(2, height + 2, dtype=pl.UInt32, eager=True),
        }
    )
    told = RowChecker(users, header, Mode.BULK, FindingLog(), told=True)
    told.check(batch)
    lines_told = sorted(set(told.told_lines().to_list()))
    assert lines_told == sorted({i + 2 for i in range(height) if i % 2 or i == 7})
    assert len(told.log.findings) < len(lines_told)  # more rows than the log's samples
    assert told.told_lines().len() == 0  # since last asked
    read = RowChecker(users, header, Mode.BULK, FindingLog())
    read.check(batch)
    assert read._told is None
