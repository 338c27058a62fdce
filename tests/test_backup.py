"""`rosterdrop backup` and `rosterdrop restore`: a round trip, on SQLite and on PostgreSQL,
taken while another connection writes, gives back the same roster, syncs, raw bytes and keys."""

import shutil
import subprocess
import threading
import zipfile

import pytest
import sftp_fixtures
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from helpers import edit
from sftp_fixtures import ROSTERDROP, SCHOOL_SMALL, Server, sha256

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import receive, stored_file
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.pipeline import import_path
from rosterdrop.intake import hostkey, tlscert
from rosterdrop.roster.models import ENTITIES, records

pytestmark = pytest.mark.django_db(transaction=True)

make_server = sftp_fixtures.make_server
sftp_template = sftp_fixtures.sftp_template


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
    key = hostkey.host_key_path()
    for path in (key, key.with_name(key.name + ".pub"), *tlscert.paths()):
        path.unlink()


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


@pytest.mark.slow
def test_backup_of_a_running_serve_during_an_upload_restores_a_working_deployment(
    make_server, tmp_path
):
    """A real `rosterdrop serve`: one district imported, then `rosterdrop backup` runs while
    an SFTP upload arrives. The restored data folder holds every upload its database names,
    byte for byte, the same host key, and serves again."""
    server = make_server()
    first = tmp_path / "roster.zip"
    with zipfile.ZipFile(first, "w") as z:
        for path in sorted(SCHOOL_SMALL.iterdir()):
            z.write(path, path.name)
    server.openssh(f"put {first}\n")
    server.wait_idle()
    [applied] = server.syncs()
    second = tmp_path / "later.zip"
    second.write_bytes(first.read_bytes())

    dest = tmp_path / "backup"
    backup = subprocess.Popen(
        [ROSTERDROP, "backup", str(dest)], env=server.env, stdout=subprocess.PIPE, text=True
    )
    server.openssh(f"put {second}\n")
    assert backup.wait(120) == 0
    server.stop()

    restored = tmp_path / "restored"  # a new machine: an empty data folder
    env = {**server.env, "ROSTERDROP_DATA_DIR": str(restored)}
    out = subprocess.run([ROSTERDROP, "restore", str(dest)], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    again = Server(restored, server.key, {})
    assert applied in again.syncs()
    for upload in again.uploads():
        if upload["stored_path"]:  # not one the backup caught while it was being received
            assert sha256(restored / upload["stored_path"]) == upload["sha256"] == sha256(first)
    assert (restored / "ssh_host_ed25519_key").read_bytes() == (
        server.data_dir / "ssh_host_ed25519_key"
    ).read_bytes()
    again.start()
    try:
        again.wait_idle()  # an upload the backup caught waiting is imported now
        assert applied in again.syncs()
        # The client pinned the key of the first server (its known_hosts), and connects.
        again.known_hosts.write_text(server.known_hosts.read_text().replace(
            f"]:{server.port} ", f"]:{again.port} "))  # fmt: skip
        assert "roster.zip" in again.openssh("ls\n").stdout
    finally:
        again.stop()
