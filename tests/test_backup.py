"""`rosterdrop backup` and `rosterdrop restore`: a round trip, on SQLite and on PostgreSQL,
taken while another connection writes, gives back the same roster, syncs, raw bytes and keys."""

import shutil
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from helpers import edit

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import receive, stored_file
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.syncs import import_path
from rosterdrop.intake import hostkey, tlscert
from rosterdrop.roster.models import ENTITIES, records

pytestmark = pytest.mark.django_db(transaction=True)


def state(district) -> dict:
    """Everything a round trip must keep, as plain values."""
    roster = {
        entity: sorted(
            records(district, entity).values_list("sourced_id", "status", "content_hash")
        )
        for entity in ENTITIES
    }
    syncs = [
        (s.pk, s.status, s.changes, s.message, s.issues.count(), s.record_changes.count())
        for s in Sync.objects.filter(district=district).order_by("pk")
    ]
    uploads = [
        (u.pk, u.filename, u.sha256, u.stored_path, stored_file(u).read_bytes())
        for u in Upload.objects.filter(district=district).order_by("pk")
    ]
    return {"roster": roster, "syncs": syncs, "uploads": uploads}


def keys() -> tuple:
    return hostkey.fingerprint(), tlscert.fingerprint()


def wipe(settings) -> None:
    call_command("flush", interactive=False, verbosity=0)
    for name in ("inbox", "roster", "sftp"):
        shutil.rmtree(settings.DATA_DIR / name, ignore_errors=True)


@pytest.fixture
def imported(district, school, tmp_path):
    """Two syncs (the second with a row error), and the same bytes sent twice."""
    import_path(district, school)
    edit(school / "users.csv", 5, "role", "wizard")
    import_path(district, school)
    for _ in range(2):
        receive(district, "users.csv", school / "users.csv", "sftp")
    keys()  # made once, as serve does on its first start
    return district


def test_round_trip_while_another_connection_writes(imported, school, tmp_path, settings):
    before, fingerprints = state(imported), keys()
    twins = Upload.objects.filter(filename="users.csv", source="sftp")
    assert len({stored_file(u).stat().st_ino for u in twins}) == 1  # one file, two names

    # A writer holds an open transaction while the backup runs: it neither blocks the backup
    # nor gets into it half-done.
    writing, backed_up = threading.Event(), threading.Event()

    def writer():
        try:
            with transaction.atomic():
                District.objects.create(slug="later", name="Later", format="oneroster-1.1")
                writing.set()
                backed_up.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(30)
    try:
        call_command("backup", str(tmp_path / "backup"))
    finally:
        backed_up.set()
        thread.join()
    assert District.objects.filter(slug="later").exists()  # committed after the backup

    wipe(settings)
    assert not District.objects.exists() and not stored_file(twins[0]).exists()
    call_command("restore", str(tmp_path / "backup"))

    district = District.objects.get(slug="springfield")
    assert not District.objects.filter(slug="later").exists()  # as of the backup's moment
    assert state(district) == before
    assert keys() == fingerprints
    assert len({stored_file(u).stat().st_ino for u in twins}) == 1  # still one file
    # The restored roster imports on: the same files again change nothing.
    assert import_path(district, school).status == "no_changes"


def test_a_damaged_backup_changes_nothing(imported, tmp_path):
    call_command("backup", str(tmp_path / "backup"))
    upload = Upload.objects.filter(district=imported).first()
    copy = tmp_path / "backup" / "files" / upload.stored_path
    copy.write_bytes(copy.read_bytes() + b"x")
    with pytest.raises(CommandError, match="damaged"):
        call_command("restore", str(tmp_path / "backup"), "--replace")
    assert stored_file(upload).exists()
    with pytest.raises(CommandError, match="exists"):
        call_command("backup", str(tmp_path / "backup"))


def test_restore_never_overwrites_a_roster_unless_told(imported, tmp_path):
    call_command("backup", str(tmp_path / "backup"))
    Sync.objects.all().delete()
    with pytest.raises(CommandError, match="--replace"):
        call_command("restore", str(tmp_path / "backup"))
    assert not Sync.objects.exists()
    call_command("restore", str(tmp_path / "backup"), "--replace")
    assert Sync.objects.count() == 2


def test_with_uploads_in_s3_the_backup_holds_the_bucket(district, school, tmp_path, s3):
    """The raw uploads and the roster's snapshot are copied out of the bucket (checked like
    any file of the backup) and a restore puts them back into it: the restored syncs can be
    retried from their bytes. The kept lines of the incremental read are not copied."""
    import_path(district, school)
    receive(district, "users.csv", school / "users.csv", "sftp")
    stored = [key for key in s3.objects() if not key.startswith("lines/")]
    kept = {key: s3.read(key) for key in stored}
    uploads = [key for key in stored if key.startswith("inbox/")]
    assert len(uploads) == len(list(school.iterdir()))  # users.csv sent again: one object
    assert len(stored) == len(uploads) + 2  # the snapshot and what it vouches for
    call_command("backup", str(tmp_path / "backup"))
    assert all((tmp_path / "backup" / "files" / key).read_bytes() == kept[key] for key in stored)

    copy = tmp_path / "backup" / "files" / stored[0]  # a damaged copy is refused
    copy.write_bytes(b"x" + kept[stored[0]])
    with pytest.raises(CommandError, match="damaged"):
        call_command("restore", str(tmp_path / "backup"), "--replace")
    copy.write_bytes(kept[stored[0]])

    call_command("flush", interactive=False, verbosity=0)
    s3.client.delete_objects(
        Bucket=s3.bucket,
        Delete={"Objects": [{"Key": f"{s3.prefix}/{key}"} for key in stored]},
    )
    call_command("restore", str(tmp_path / "backup"))
    assert {key: s3.read(key) for key in s3.objects()} == kept
    assert set(Upload.objects.values_list("stored_path", flat=True)) == set(uploads)
