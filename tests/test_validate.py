"""`check`, as `rosterdrop validate` runs it: each broken input, its issue and its line."""

import io
import zipfile
from pathlib import Path

import pytest
from helpers import edit, issues, rows, write

from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.reader import expand


def validate(path: Path, fmt: str | None = None) -> dict:
    return check(expand(path), Settings.named(fmt)).as_dict()


def test_small_school_is_clean_and_counted(school):
    result = validate(school)
    assert result["format"] == "oneroster-1.1"
    assert result["counts"]["users"] == 79
    assert result["counts"]["enrollments"] == 546
    assert result["counts"]["roles"] == 79  # one per user-org pair, from users.orgSourcedIds
    assert not [i for i in result["issues"] if i["severity"] != "warning"]


def test_bad_date_is_reported_at_its_line(school):
    edit(school / "enrollments.csv", 7, "beginDate", "9/1/2025")
    [issue] = issues(validate(school), "date_invalid")
    assert (issue["file"], issue["line"], issue["column"]) == ("enrollments.csv", 7, "beginDate")
    assert issue["value"] == "9/1/2025" and issue["severity"] == "warning"


def test_unknown_enum_skips_the_row(school):
    edit(school / "classes.csv", 4, "classType", "lecture")
    result = validate(school)
    [issue] = issues(result, "enum_invalid")
    assert (issue["file"], issue["line"], issue["severity"]) == ("classes.csv", 4, "error")
    assert result["counts"]["classes"] == 41


def test_enum_in_wrong_case_is_normalised_with_a_warning(school):
    edit(school / "enrollments.csv", 3, "role", "Student")
    result = validate(school)
    [issue] = issues(result, "enum_normalised")
    assert issue["line"] == 3 and issue["severity"] == "warning"
    assert result["counts"]["enrollments"] == 546


def test_duplicate_id_names_both_lines(school):
    table = rows(school / "users.csv")
    table.append(table[5])
    write(school / "users.csv", table)
    [issue] = issues(validate(school), "duplicate_id")
    assert issue["line"] == len(table) and "line 6" in issue["message"]


def test_dangling_reference_skips_the_enrollment(school):
    edit(school / "enrollments.csv", 10, "classSourcedId", "no-such-class")
    result = validate(school)
    [issue] = issues(result, "reference_missing")
    assert (issue["file"], issue["line"], issue["column"]) == (
        "enrollments.csv",
        10,
        "classSourcedId",
    )
    assert result["counts"]["enrollments"] == 545


def test_ragged_row_and_multiline_value_keep_exact_lines(school):
    path = school / "users.csv"
    text = path.read_text().splitlines()
    header = text[0].split(",")
    given = header.index("givenName")
    cells = text[2].split(",")
    cells[given] = '"Ann\nMarie"'
    text[2] = ",".join(cells)  # a value over two physical lines: lines 3-4
    text[5] = text[5] + ",extra"  # physical line 7 after the insertion
    path.write_text("\n".join(text) + "\n")
    result = validate(school)
    [ragged] = issues(result, "row_width")
    assert ragged["line"] == 7
    assert result["counts"]["users"] == 78


def test_a_short_row_and_a_long_row_are_both_found_even_when_they_balance_out(school):
    """Quote-free files take the fast path; a row one value short and another one value long
    leave the file's delimiter count right, and must still both be reported."""
    path = school / "enrollments.csv"
    text = path.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0]  # line 4: one value short
    text[8] = text[8] + ",extra"  # line 9: one value long
    path.write_text("\n".join(text) + "\n")
    result = validate(school)
    assert sorted(i["line"] for i in issues(result, "row_width")) == [4, 9]
    assert result["counts"]["enrollments"] == 544


def test_tiny_read_chunks_give_the_same_rows_lines_and_issues(school, monkeypatch):
    """Chunk edges fall inside UTF-8 characters, quoted values and CRLF pairs: same result."""
    from rosterdrop.ingest import decode

    users = school / "users.csv"
    table = rows(users)
    table[1][table[0].index("familyName")] = "Nguyễn, Ødegård"
    table[2][table[0].index("givenName")] = "Ann\nMarie"
    write(users, table)
    users.write_bytes(users.read_bytes().replace(b"\n", b"\r\n"))
    edit(school / "enrollments.csv", 7, "beginDate", "9/1/2025")
    expected = validate(school)
    monkeypatch.setattr(decode, "CHUNK", 7)
    assert validate(school) == expected
    assert expected["counts"]["users"] == 79
    [issue] = issues(expected, "date_invalid")
    assert issue["line"] == 7


def test_a_stray_quote_costs_only_its_line(school):
    """The quote opens a value that would run to the end of the file: line 5 is reported and
    reading starts again at line 6, so every other course is read."""
    path = school / "courses.csv"
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace(",", ',"', 1)
    path.write_text("\n".join(lines) + "\n")
    result = validate(school)
    [issue] = issues(result, "unterminated_quote")
    assert issue["severity"] == "error" and issue["line"] == 5
    assert result["counts"]["courses"] == len(lines) - 2


def test_bom_crlf_and_cp1252_are_read(school):
    path = school / "users.csv"
    table = rows(path)
    table[1][table[0].index("familyName")] = "Muñoz"
    write(path, table)
    path.write_bytes(path.read_text().replace("\n", "\r\n").encode("cp1252"))
    orgs = school / "orgs.csv"
    orgs.write_bytes(b"\xef\xbb\xbf" + orgs.read_bytes())
    result = validate(school)
    files = {f["name"]: f["encoding"] for f in result["files"]}
    assert files["users.csv"] == "cp1252" and files["orgs.csv"] == "utf-8-sig"
    assert result["counts"]["users"] == 79 and result["counts"]["orgs"] == 1


def test_header_out_of_order_is_read_by_name(school):
    table = rows(school / "orgs.csv")
    write(school / "orgs.csv", [list(reversed(r)) for r in table])
    result = validate(school)
    assert issues(result, "header_order")[0]["line"] == 1
    assert result["counts"]["orgs"] == 1


def test_missing_required_column_is_fatal_with_case_hint(school):
    table = rows(school / "classes.csv")
    table[0][table[0].index("classType")] = "ClassType"
    write(school / "classes.csv", table)
    [issue] = issues(validate(school), "header_missing_column")
    assert issue["severity"] == "fatal" and "case-sensitive" in issue["message"]


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_zip_bomb_is_refused_before_reading(tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", {"users.csv": b"0" * (50 << 20)})
    [issue] = validate(bomb)["issues"]
    assert issue["code"] == "zip_ratio" and issue["severity"] == "fatal"


def test_member_with_a_path_is_refused(tmp_path, school):
    members = {p.name: p.read_bytes() for p in school.iterdir()}
    members["../x.csv"] = b"a,b\n"
    [issue] = validate(_zip(tmp_path / "up.zip", members))["issues"]
    assert issue["code"] == "zip_member_refused" and issue["value"] == "../x.csv"


def test_zip_of_the_folder_reads_the_same(tmp_path, school):
    members = {p.name: p.read_bytes() for p in school.iterdir()}
    assert validate(_zip(tmp_path / "up.zip", members))["counts"] == validate(school)["counts"]


def test_missing_manifest_is_fatal_and_oneroster_10_is_recognised(school):
    (school / "manifest.csv").unlink()
    assert issues(validate(school, "oneroster-1.1"), "manifest_missing")
    result = validate(school)
    assert result["format"] == "oneroster-1.0"


def test_not_a_zip_or_csv_gives_a_clear_error(tmp_path):
    junk = tmp_path / "users.csv"
    junk.write_bytes(io.BytesIO(b"\x00\xff\xfe garbage").getvalue())
    result = validate(tmp_path, "oneroster-1.0")
    assert result["issues"][0]["severity"] == "fatal"


def test_reading_ahead_hands_over_items_errors_and_stops_when_closed():
    """Batches are read in a thread ahead of the checks: same items in order, the reader's
    error raised in the consumer, and the thread gone once the consumer closes early."""
    import threading

    from rosterdrop.ingest.ahead import ahead

    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("unterminated")

    items = ahead(broken())
    assert next(items) == 1
    with pytest.raises(ValueError, match="unterminated"):
        next(items)

    endless = ahead(iter(lambda: 0, 1))
    assert next(endless) == 0
    endless.close()
    assert not [t for t in threading.enumerate() if t.name == "rosterdrop-ahead"]


def test_extra_columns_named_like_polars_arguments_are_kept(school):
    """Extra columns are kept as metadata whatever their names, `schema` and `eager` too."""
    table = rows(school / "users.csv")
    write(
        school / "users.csv", [table[0] + ["schema", "eager"]] + [r + ["s", "e"] for r in table[1:]]
    )
    result = validate(school)
    assert result["counts"]["users"] == 79
    assert not [i for i in result["issues"] if i["severity"] != "warning"]
