"""With shared storage (S3), a roster's snapshot and the incremental read's kept lines live in
the bucket: a worker on another host (another data folder, the same database and bucket) reads
the ones the last sync kept instead of rebuilding them, older ones leave the bucket with their
token, and `restore --replace` leaves under the prefix exactly what the backup holds."""

import pytest
from django.core.management import call_command
from helpers import rows_through

from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster import store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rebuilt(monkeypatch) -> list[int]:
    """The districts whose snapshot was read back from the roster tables from now on."""
    districts: list[int] = []
    real = store.snapshot

    def counted(cur, district_id):
        districts.append(district_id)
        return real(cur, district_id)

    monkeypatch.setattr(store, "snapshot", counted)
    return districts


def _kept(s3, district) -> dict[str, list[str]]:
    """What the bucket holds of the district's snapshots and kept lines, by folder."""
    objects = s3.objects()
    return {
        "roster": [k for k in objects if k.startswith(f"roster/{district.pk}-t")],
        "lines": [k for k in objects if k.startswith(f"lines/{district.pk}/")],
    }


def _token_of(key: str) -> str:
    return key.removeprefix("roster/").split("-t")[1].split(".")[0]


def _manifest_in_other_bytes(school) -> None:
    """Line ends switched: read again, not recognised as the files sent before."""
    manifest = school / "manifest.csv"
    text = manifest.read_bytes()
    manifest.write_bytes(
        text.replace(b"\r\n", b"\n") if b"\r\n" in text else text.replace(b"\n", b"\r\n")
    )


def test_a_second_host_reads_the_snapshot_and_lines_the_first_kept(
    district, school, s3, settings, tmp_path, monkeypatch, rebuilt
):
    settings.DATA_DIR = tmp_path / "host-a"
    import_path(district, school)
    _manifest_in_other_bytes(school)
    assert import_path(district, school).status == "no_changes"  # keeps the files' lines
    token = str(store.roster_token(district.pk))
    first = _kept(s3, district)
    assert sorted(first["roster"]) == [
        f"roster/{district.pk}-t{token}.arrow",
        f"roster/{district.pk}-t{token}.vouched.json",
    ]
    assert first["lines"] and all(
        k.startswith(f"lines/{district.pk}/t{token}/") for k in first["lines"]
    )

    # Another host: an empty data folder, the same database and bucket.
    settings.DATA_DIR = tmp_path / "host-b"
    read = rows_through(monkeypatch, "prepare")
    rebuilt.clear()
    enrollments = (school / "enrollments.csv").read_bytes().splitlines(keepends=True)
    enrollments[5] = enrollments[5].replace(b"2026-06-10", b"2026-06-11")
    (school / "enrollments.csv").write_bytes(b"".join(enrollments))
    assert import_path(district, school).status == "applied"
    assert rebuilt == []  # the snapshot came from the bucket
    assert read["enrollments.csv"] == 1 and read["classes.csv"] == 0  # so did the lines
    assert (settings.DATA_DIR / f"roster/{district.pk}-t{token}.arrow").exists() is False

    # The old token's snapshot and lines left the bucket with it; the new ones are there.
    new = str(store.roster_token(district.pk))
    second = _kept(s3, district)
    assert new != token and {_token_of(k) for k in second["roster"]} == {new}
    assert second["lines"] and all(
        k.startswith(f"lines/{district.pk}/t{new}/") for k in second["lines"]
    )

    # Back on the first host, whose own file is of the old token: the new one is fetched.
    settings.DATA_DIR = tmp_path / "host-a"
    read.clear()
    _manifest_in_other_bytes(school)
    assert import_path(district, school).status == "no_changes"
    assert rebuilt == [] and read["enrollments.csv"] == 0
    kept = sorted(p.name for p in (settings.DATA_DIR / "roster").glob(f"{district.pk}-t*"))
    assert kept == [f"{district.pk}-t{new}.arrow", f"{district.pk}-t{new}.vouched.json"]


def test_a_damaged_snapshot_in_the_bucket_is_rebuilt_not_used(
    district, school, s3, settings, tmp_path, rebuilt
):
    settings.DATA_DIR = tmp_path / "host-a"
    import_path(district, school)
    [key] = [k for k in _kept(s3, district)["roster"] if k.endswith(".arrow")]
    data = s3.read(key)
    s3.client.put_object(
        Bucket=s3.bucket,
        Key=f"{s3.prefix}/{key}",
        Body=data[:-1] + bytes([data[-1] ^ 1]),
        Metadata=s3.client.head_object(Bucket=s3.bucket, Key=f"{s3.prefix}/{key}")["Metadata"],
    )
    settings.DATA_DIR = tmp_path / "host-b"
    rebuilt.clear()
    (school / "users.csv").write_bytes(
        (school / "users.csv").read_bytes().replace(b"Copperpot,", b"Copperpots,", 1)
    )
    assert import_path(district, school).status == "applied"
    assert rebuilt == [district.pk]


def test_restore_replace_leaves_exactly_the_backups_objects(
    district, school, s3, settings, tmp_path, rebuilt
):
    import_path(district, school)
    call_command("backup", str(tmp_path / "backup"))
    held = sorted(s3.objects())
    assert any(k.startswith("roster/") for k in held)

    # Later: another import (new uploads, a new snapshot, kept lines), and objects rosterdrop
    # does not own under the prefix, which stay.
    _manifest_in_other_bytes(school)
    import_path(district, school)
    users = school / "users.csv"
    users.write_bytes(users.read_bytes().replace(b"Copperpot,", b"Copperpots,", 1))
    import_path(district, school)
    assert sorted(s3.objects()) != held
    foreign = ["notes/readme.txt", "inboxes/other.csv"]
    for key in foreign:
        s3.client.put_object(Bucket=s3.bucket, Key=f"{s3.prefix}/{key}", Body=b"not ours")

    call_command("restore", str(tmp_path / "backup"), "--replace")
    assert sorted(s3.objects()) == sorted(held + foreign)

    # The restored roster imports from the restored snapshot, without kept lines (read in full).
    settings.DATA_DIR = tmp_path / "another-host"
    rebuilt.clear()
    assert import_path(district, school).status == "applied"
    assert rebuilt == []
