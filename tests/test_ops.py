"""Operations (rosterdrop.ops): /healthz, /readyz, /metrics and JSON logs, through the Django
test client and through a real `rosterdrop serve` driven with curl."""

import json
import logging
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from sftp_fixtures import SCHOOL_SMALL

from rosterdrop.ops.logs import JsonFormatter


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# The Django test client (its REMOTE_ADDR is 127.0.0.1).


def test_healthz_answers_without_the_database(client):
    response = client.get("/healthz")  # no db mark: pytest-django refuses any query
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ready_when_database_and_data_folder_work(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "data_folder": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_503_when_the_data_folder_takes_no_file(client, settings, tmp_path):
    # A data folder that is not there (permissions would not stop root, who runs the tests).
    settings.DATA_DIR = tmp_path / "gone"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "data_folder": "unavailable",
    }
    assert str(tmp_path) not in response.content.decode()


@pytest.mark.django_db
def test_metrics_count_uploads_syncs_queue_import_seconds_and_bans(client, district):
    from rosterdrop.inbox.models import Upload
    from rosterdrop.ingest.models import Sync
    from rosterdrop.intake.models import Ban

    def upload(source, status):
        return Upload.objects.create(
            district=district, filename="users.csv", size=1, sha256="0" * 64, source=source,
            stored_path="x", status=status,
        )  # fmt: skip

    upload("sftp", "imported")
    upload("sftp", "received")
    upload("ftps", "received")
    upload("web", "imported")
    now = timezone.now()
    for status, seconds, decided_by in [
        ("applied", 0.2, ""),
        ("applied_with_errors", 3, ""),
        ("failed", 700, ""),
        ("applied", 5000, "operator"),  # an approval: the hold is not import time
        ("interrupted", 40, ""),  # finished by recovery, not timed
        ("running", None, ""),
    ]:
        sync = Sync.objects.create(district=district, status=status, decided_by=decided_by)
        finished = None if seconds is None else now
        Sync.objects.filter(pk=sync.pk).update(
            started_at=now - timedelta(seconds=seconds or 0), finished_at=finished
        )
    Ban.objects.create(ip="198.51.100.7", window_start=now, banned_until=now + timedelta(hours=1))
    Ban.objects.create(ip="198.51.100.8", window_start=now, banned_until=now - timedelta(hours=1))
    Ban.objects.create(ip="198.51.100.9", window_start=now, score=3)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    got = samples(text)

    def uploads(transport):
        return got["rosterdrop_uploads_received_total", (("transport", transport),)]

    assert [uploads(t) for t in ("sftp", "ftps", "web", "cli")] == [2, 1, 1, 0]
    assert got["rosterdrop_uploads_waiting", ()] == 2
    syncs = {labels[0][1]: v for (name, labels), v in got.items() if name == "rosterdrop_syncs"}
    assert syncs == {
        "running": 1, "applied": 2, "applied_with_errors": 1, "held": 0, "no_changes": 0,
        "failed": 1, "discarded": 0, "interrupted": 1,
    }  # fmt: skip
    assert got["rosterdrop_import_seconds_count", ()] == 3
    assert got["rosterdrop_import_seconds_sum", ()] == pytest.approx(703.2, abs=0.01)
    assert got["rosterdrop_import_seconds_bucket", (("le", "0.5"),)] == 1
    assert got["rosterdrop_import_seconds_bucket", (("le", "5.0"),)] == 2
    assert got["rosterdrop_import_seconds_bucket", (("le", "600.0"),)] == 2
    assert got["rosterdrop_import_seconds_bucket", (("le", "1800.0"),)] == 3
    assert got["rosterdrop_import_seconds_bucket", (("le", "+Inf"),)] == 3
    assert got["rosterdrop_defender_bans", ()] == 1
    # Counts only: no district, file, login or address leaves.
    for private in ("springfield", "Springfield", "users.csv", "198.51.100", "operator"):
        assert private not in text


@pytest.mark.django_db
def test_metrics_only_for_allowed_addresses(client, settings):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    settings.METRICS_ALLOW = ["203.0.113.0/24"]
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.5").status_code == 200
    assert client.get("/metrics").status_code == 403  # loopback is no longer listed
    # /healthz and /readyz stay open to the load balancer.
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_json_formatter_writes_one_object_a_line():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.getLogger("rosterdrop.test").makeRecord(
            "rosterdrop.test", logging.ERROR, __file__, 1, "two\nlines %s", ("é",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "rosterdrop.test"
    assert entry["message"] == "two\nlines é"
    assert "ValueError: bad\nvalue" in entry["exception"]
    assert entry["time"].endswith("+00:00")


# A real `rosterdrop serve`, asked with curl as a load balancer and Prometheus would.


def curl(url: str) -> tuple[int, str]:
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.slow
def test_serve_answers_health_readiness_metrics_and_logs_json(make_server, tmp_path):
    server = make_server(ROSTERDROP_LOG_FORMAT="json")
    web = f"http://127.0.0.1:{server.web_port}"
    assert curl(f"{web}/healthz") == (200, '{"status": "ok"}')
    status, body = curl(f"{web}/readyz")
    assert (status, json.loads(body)["status"]) == (200, "ok")
    before = samples(curl(f"{web}/metrics")[1])
    assert before["rosterdrop_syncs", (("status", "applied"),)] == 0

    server.openssh(f"put {SCHOOL_SMALL}/*.csv\n")
    server.wait_for(lambda: server.syncs(), what="a sync")
    server.wait_idle()

    status, body = curl(f"{web}/metrics")
    assert status == 200
    after = samples(body)
    assert after["rosterdrop_syncs", (("status", "applied"),)] == 1
    assert after["rosterdrop_import_seconds_count", ()] == 1
    assert after["rosterdrop_uploads_received_total", (("transport", "sftp"),)] == len(
        list(SCHOOL_SMALL.glob("*.csv"))
    )
    assert after["rosterdrop_uploads_waiting", ()] == 0

    server.stop()  # its last lines are written
    lines = [line for line in server.log if line.strip()]
    entries = [json.loads(line) for line in lines]  # every log line after "Ready." is JSON
    assert all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert any(
        e["logger"] == "rosterdrop.intake.worker" and e["message"].startswith("importing")
        for e in entries
    )


@pytest.mark.slow
def test_serve_readyz_is_503_once_its_database_is_gone(make_server, postgres_database):
    url, drop = postgres_database
    server = make_server(ROSTERDROP_DATABASE_URL=url)
    web = f"http://127.0.0.1:{server.web_port}"
    status, body = curl(f"{web}/readyz")
    assert status == 200, body
    drop()
    status, body = curl(f"{web}/readyz")
    assert status == 503
    assert json.loads(body) == {
        "status": "unavailable",
        "database": "unavailable",
        "data_folder": "ok",
    }
    assert curl(f"{web}/healthz")[0] == 200  # up, but not to be sent traffic
    assert curl(f"{web}/metrics")[0] == 503
