"""Retention: raw uploads older than the setting are really deleted; history stays."""

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import receive, stored_file
from rosterdrop.intake import folder
from rosterdrop.intake.worker import apply_retention

pytestmark = pytest.mark.django_db


def _upload(district, tmp_path, name: str, status: str, age_days: int) -> Upload:
    source = tmp_path / name
    source.write_text("sourcedId,name\n1,x\n")
    upload = receive(district, name, source, "sftp")
    Upload.objects.filter(pk=upload.pk).update(
        status=status, received_at=timezone.now() - timedelta(days=age_days)
    )
    upload.refresh_from_db()
    return upload


def test_old_uploads_lose_their_bytes_but_keep_their_record(district, tmp_path, settings):
    settings.UPLOAD_RETENTION_DAYS = 30
    old = _upload(district, tmp_path, "old.csv", "imported", 31)
    recent = _upload(district, tmp_path, "recent.csv", "imported", 5)
    waiting = _upload(district, tmp_path, "waiting.csv", "received", 40)
    old_path = stored_file(old)
    visible = folder.district_root(district.slug)
    visible.mkdir(parents=True, exist_ok=True)
    (visible / "old.csv").write_text("x")
    os.utime(visible / "old.csv", (0, 0))
    (visible / "recent.csv").write_text("x")

    assert apply_retention() == 1

    old.refresh_from_db()
    assert not old_path.exists() and old.stored_path == "" and old.purged_at is not None
    assert old.sha256 and old.filename == "old.csv"  # the history still reads
    assert stored_file(recent).exists() and stored_file(waiting).exists()
    assert not (visible / "old.csv").exists() and (visible / "recent.csv").exists()


def test_zero_days_keeps_everything(district, tmp_path, settings):
    settings.UPLOAD_RETENTION_DAYS = 0
    old = _upload(district, tmp_path, "old.csv", "imported", 3650)
    assert apply_retention() == 0
    assert stored_file(old).exists()
