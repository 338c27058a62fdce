"""Decoding never guesses: the fallback only for a file with no UTF-8 in it, a UTF-8 file's bad
bytes reported line by line, UTF-16 without a byte order mark recognised."""

import io

import pytest

from rosterdrop.ingest import decode as decoding
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import Failure
from rosterdrop.ingest.read import read_table

HEADER = "id,name\n"


def _read(data: bytes, fallback: str = "cp1252") -> tuple[str, dict[int, str], list]:
    decoded = decode(io.BytesIO(data), "users.csv", fallback)
    table = read_table("users.csv", decoded.chunks)
    rows = {line: name for batch in table.batches for _, name, line in batch.iter_rows()}
    findings = [(f.code, f.line, f.value) for f in decoded.findings + table.findings]
    return decoded.encoding, rows, findings


def _refused(data: bytes, fallback: str = "cp1252"):
    with pytest.raises(Failure) as refused:
        _read(data, fallback)
    return refused.value.finding


def test_a_utf8_file_with_one_bad_byte_stays_utf8_and_loses_only_that_line():
    data = HEADER.encode() + b"u1,Bad\xe9name\n" + "u2,Cýrus\nu3,Zoë\n".encode()
    encoding, rows, findings = _read(data)
    assert encoding == "utf-8"
    assert rows == {3: "Cýrus", 4: "Zoë"}  # never CÃ½rus
    assert findings == [("utf8_invalid", 2, "0xE9")]


def test_a_bad_byte_in_a_later_chunk_is_reported_at_its_exact_line(monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK", 16)
    monkeypatch.setattr(decoding, "HEAD", 16)
    data = "id,name\nu1,Cýrus\n".encode() + b"u2,x\nu3,y\n" * 5 + b"u9,\xff\n"
    encoding, rows, findings = _read(data)
    assert encoding == "utf-8" and findings == [("utf8_invalid", 13, "0xFF")]
    assert len(rows) == 11


def test_a_file_with_no_utf8_in_it_is_read_in_the_fallback():
    encoding, rows, findings = _read((HEADER + "u1,Müller\nu2,Øst\n").encode("cp1252"))
    assert (encoding, rows, findings) == ("cp1252", {2: "Müller", 3: "Øst"}, [])


@pytest.mark.parametrize("byte", [0x81, 0x8D, 0x8F, 0x90, 0x9D])
def test_bytes_cp1252_leaves_undefined_are_a_finding(byte):
    finding = _refused(HEADER.encode() + b"u1,M\xfcller\nu2,a" + bytes([byte]) + b"b\n")
    assert (finding.code, finding.severity, finding.line) == ("encoding_invalid", "fatal", 3)
    assert finding.value == f"0x{byte:02X}"


def test_no_fallback_means_a_file_that_is_not_utf8_is_refused():
    finding = _refused(HEADER.encode() + b"u1,M\xfcller\n", fallback="")
    assert (finding.code, finding.line) == ("encoding_invalid", 2)


def test_a_file_that_turns_from_the_fallback_to_utf8_is_refused(monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK", 8)
    monkeypatch.setattr(decoding, "HEAD", 8)
    finding = _refused(HEADER.encode() + b"u1,M\xfcller\n" + "u2,Cýrus\n".encode())
    assert (finding.code, finding.line) == ("encoding_invalid", 3)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_recognised(encoding):
    found, rows, findings = _read((HEADER + "u1,Cýrus\nu2,Zoë\n").encode(encoding))
    assert (found, rows) == (encoding, {2: "Cýrus", 3: "Zoë"})
    assert findings == [("encoding_utf16_no_bom", None, "")]


def test_binary_data_is_refused():
    assert _refused(b"\0" * 5000).code == "file_binary"


def test_a_file_cut_inside_a_character_is_truncated():
    data = "id,name\nu1,Cýrus\nu2,Cý".encode()[:-1]
    finding = _refused(data)
    assert (finding.code, finding.line) == ("file_truncated", 3)


def test_an_old_mac_file_gets_lf_line_ends_even_across_chunks(monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK", 5)
    monkeypatch.setattr(decoding, "HEAD", 5)
    _, rows, findings = _read(b"id,name\ru1,a\ru2,b\r")
    assert rows == {2: "a", 3: "b"} and findings == []


def test_more_bad_lines_than_the_limit_refuse_the_file(monkeypatch):
    monkeypatch.setattr(decoding, "MAX_BAD_LINES", 2)
    finding = _refused(HEADER.encode() + "u0,Cýrus\n".encode() + b"u1,\xff\n" * 3)
    assert finding.code == "encoding_invalid"


@pytest.mark.django_db
def test_check_only_decodes_as_the_import_does_when_the_district_has_no_fallback(district, school):
    """A district set to UTF-8 only (no fallback encoding): "Check only" and `validate
    --district` must refuse a cp1252 file as its import does, not read it as cp1252."""
    from rosterdrop.ingest.district_check import check_for_district
    from rosterdrop.ingest.syncs import import_path

    district.fallback_encoding = ""
    district.save()
    users = school / "users.csv"
    users.write_bytes(users.read_bytes().replace(b"Thandiwe", "Thandiwé".encode("cp1252")))
    checked = check_for_district(sorted(school.iterdir()), district)
    sync = import_path(district, school)
    assert sync.status == "failed"
    assert checked.fatal
    assert {f.code for f in checked.log.all() if f.severity == "fatal"} == set(
        sync.issues.filter(severity="fatal").values_list("code", flat=True)
    )
