"""Retention: raw uploads older than the setting are really deleted; history stays."""

import os
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import DISTRICT_LARGE
from django.utils import timezone
from s3_fixtures import is_stored
from sftp_fixtures import ROSTERDROP

from rosterdrop.audit.models import AuditEvent
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import receive, stored_file
from rosterdrop.intake import folder
from rosterdrop.intake.transfer import Transfer
from rosterdrop.intake.worker import apply_retention

pytestmark = pytest.mark.django_db


def _upload(district, tmp_path, name: str, status: str, age_days: int) -> Upload:
    source = tmp_path / name
    source.write_text(f"sourcedId,name\n1,{name}\n")  # other names, other bytes
    upload = receive(district, name, source, "sftp")
    Upload.objects.filter(pk=upload.pk).update(
        status=status, received_at=timezone.now() - timedelta(days=age_days)
    )
    upload.refresh_from_db()
    return upload


def test_old_uploads_lose_their_bytes_but_keep_their_record(district, tmp_path, settings, backend):
    settings.UPLOAD_RETENTION_DAYS = 30
    old = _upload(district, tmp_path, "old.csv", "imported", 31)
    recent = _upload(district, tmp_path, "recent.csv", "imported", 5)
    waiting = _upload(district, tmp_path, "waiting.csv", "received", 40)
    old_key = old.stored_path
    assert is_stored(backend, old_key)
    visible = folder.district_root(district.slug)
    visible.mkdir(parents=True, exist_ok=True)
    (visible / "old.csv").write_text("x")
    os.utime(visible / "old.csv", (0, 0))
    (visible / "recent.csv").write_text("x")

    assert apply_retention() == 1

    old.refresh_from_db()
    assert not is_stored(backend, old_key) and old.stored_path == "" and old.purged_at
    assert old.sha256 and old.filename == "old.csv"  # the history still reads
    assert is_stored(backend, recent.stored_path) and is_stored(backend, waiting.stored_path)
    assert not (visible / "old.csv").exists() and (visible / "recent.csv").exists()


def test_zero_days_keeps_everything(district, tmp_path, settings, backend):
    settings.UPLOAD_RETENTION_DAYS = 0
    old = _upload(district, tmp_path, "old.csv", "imported", 3650)
    assert apply_retention() == 0
    assert is_stored(backend, old.stored_path)


def test_retention_audits_what_it_deleted(district, tmp_path, settings, backend):
    settings.UPLOAD_RETENTION_DAYS = 30
    old = _upload(district, tmp_path, "old.csv", "imported", 31)
    where = f"s3://{backend.bucket}/rd/{old.stored_path}" if backend else old.stored_path
    apply_retention()
    [event] = AuditEvent.objects.filter(kind="retention")
    assert f"raw upload {old.pk} old.csv of springfield" in event.detail
    assert where in event.detail and "no copy left" in event.detail


def test_an_object_two_uploads_share_goes_with_the_last_of_them(district, tmp_path, settings, s3):
    """In S3 the same bytes sent again share the earlier upload's object: purging the older
    upload leaves it to the newer; purging the newer deletes it."""
    settings.UPLOAD_RETENTION_DAYS = 30
    old = _upload(district, tmp_path, "users.csv", "imported", 40)
    new = _upload(district, tmp_path, "users.csv", "imported", 5)
    assert old.stored_path == new.stored_path and s3.objects() == [old.stored_path]
    apply_retention()
    assert s3.objects() == [new.stored_path]
    assert "kept by a later upload" in AuditEvent.objects.get(kind="retention").detail
    Upload.objects.filter(pk=new.pk).update(received_at=timezone.now() - timedelta(days=31))
    apply_retention()
    assert s3.objects() == []
    latest = AuditEvent.objects.filter(kind="retention").order_by("-id").first()
    assert "no copy left" in latest.detail


def test_bytes_another_upload_keeps_stay_with_its_links(district, tmp_path, settings):
    """The same bytes sent twice share one file: purging the older upload deletes only its own
    name while the newer keeps the bytes (and its import's links); purging the newer deletes
    the last name and the leftover link of a crashed import."""
    settings.UPLOAD_RETENTION_DAYS = 30
    old = _upload(district, tmp_path, "users.csv", "imported", 40)
    new = _upload(district, tmp_path, "users.csv", "imported", 5)
    assert stored_file(old).stat().st_ino == stored_file(new).stat().st_ino  # one inode
    (settings.DATA_DIR / "tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="upload-", dir=settings.DATA_DIR / "tmp"))
    (work / "users.csv").hardlink_to(stored_file(new))  # as an import makes it

    apply_retention()
    assert stored_file(new).exists() and (work / "users.csv").exists()
    [event] = AuditEvent.objects.filter(kind="retention")
    assert "kept by a later upload" in event.detail

    Upload.objects.filter(pk=new.pk).update(received_at=timezone.now() - timedelta(days=31))
    inode = stored_file(new).stat().st_ino
    apply_retention()
    assert not (work / "users.csv").exists() and not stored_file(new).exists()
    latest = AuditEvent.objects.filter(kind="retention").order_by("-id").first()
    assert f"tmp/{work.name}/users.csv" in latest.detail and "no copy left" in latest.detail
    assert inode not in {p.stat().st_ino for p in settings.DATA_DIR.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_crashed_import_leaves_no_copy_after_retention(tmp_path, migrated_data):
    """A real `rosterdrop import` killed with SIGKILL mid-import leaves hard links to the raw
    upload in tmp/upload-*/; once the upload expires, retention deletes them too."""
    data = tmp_path / "data"
    shutil.copytree(migrated_data, data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTERDROP_")}
    env["ROSTERDROP_DATA_DIR"] = str(data)
    run = dict(env=env, capture_output=True, text=True, timeout=120)
    subprocess.run(
        [ROSTERDROP, "district", "add", "big", "--name", "Big", "--format", "oneroster-1.1"],
        check=True,
        **run,
    )
    proc = subprocess.Popen(
        [ROSTERDROP, "import", str(DISTRICT_LARGE), "--district", "big"], env=env
    )
    deadline = time.monotonic() + 60
    links: list = []
    while not links and time.monotonic() < deadline and proc.poll() is None:
        links = list((data / "tmp").glob("upload-*/district-large.zip"))
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert links and links[0].exists() and links[0].stat().st_nlink == 2  # the crash's leftover
    # Later the upload is settled (recovered and imported again) and grows old.
    settle = (
        "from datetime import timedelta; from django.utils import timezone;"
        "from rosterdrop.inbox.models import Upload; from rosterdrop.ingest.models import Sync;"
        "Sync.objects.update(status='failed');"
        "Upload.objects.update(status='imported', received_at=timezone.now()-timedelta(days=91))"
    )
    subprocess.run([ROSTERDROP, "shell", "-c", settle], check=True, **run)
    dry = subprocess.run([ROSTERDROP, "retention", "--dry-run"], check=True, **run).stdout
    assert "would delete big/district-large.zip" in dry and links[0].exists()
    out = subprocess.run([ROSTERDROP, "retention"], check=True, **run).stdout
    assert "1 upload(s) deleted" in out
    assert not links[0].exists() and not list((data / "inbox").rglob("0*"))
    audit = subprocess.run(
        [ROSTERDROP, "shell", "-c", "from rosterdrop.audit.models import AuditEvent as A;"
         "print([e.detail for e in A.objects.filter(kind='retention')])"],
        check=True,
        **run,
    ).stdout  # fmt: skip
    assert str(links[0].relative_to(data)) in audit and "no copy left" in audit


def test_an_upload_shown_in_its_folder_goes_with_its_inbox_file(district, settings):
    """An upload received over SFTP or FTPS is one file with two names, the inbox's and the
    folder's: retention deletes both, and says no copy is left."""
    settings.UPLOAD_RETENTION_DAYS = 30
    folder.open_root(district.slug)
    transfer = Transfer(district, "users.csv", "sftp", "springfield", None)
    transfer.write_at(0, b"sourcedId\n1\n")
    upload = transfer.finish(clean=True)
    assert upload is not None
    shown = folder.district_root(district.slug) / "users.csv"
    assert shown.stat().st_ino == stored_file(upload).stat().st_ino
    Upload.objects.filter(pk=upload.pk).update(
        status="imported", received_at=timezone.now() - timedelta(days=31)
    )
    apply_retention()
    assert not shown.exists() and not stored_file(upload).exists()
    [event] = AuditEvent.objects.filter(kind="retention")
    assert f"sftp/{district.slug}/users.csv" in event.detail and "no copy left" in event.detail
