"""Uploads over FTPS, explicit and implicit, with curl and lftp: the same syncs as over SFTP."""

import shutil

import pytest
from ftps_fixtures import curl, lftp
from sftp_fixtures import DISTRICT_LARGE, SCHOOL_SMALL, assert_zip_imported

pytestmark = pytest.mark.slow

LOGIN = "alpha_admin_district_st"


def comparable(sync: dict) -> dict:
    """A sync as `sync list --json` prints it, without what differs between two runs."""
    return {
        k: v for k, v in sync.items() if k not in ("sync", "district", "started_at", "finished_at")
    }


def test_curl_explicit_zip_matches_the_same_zip_over_sftp(server, tmp_path):
    result = curl(server, DISTRICT_LARGE, implicit=False, name="roster.zip")
    assert result.returncode == 0, result.stderr
    server.wait_idle()
    assert_zip_imported(server, "ftps", LOGIN)
    assert "ftps, password" in server.audit("login_ok")[0]["detail"]

    # The same bytes over SFTP to the other district end in the same sync.
    zip_path = tmp_path / "roster.zip"
    shutil.copy(DISTRICT_LARGE, zip_path)
    server.openssh(f"put {zip_path}\n", "beta")
    server.wait_idle()
    by_district = {s["district"]: s for s in server.sync_list()}
    assert by_district["alpha"]["status"] == "applied"
    assert comparable(by_district["alpha"]) == comparable(by_district["beta"])


def test_lftp_implicit_zip_upload_is_imported(server):
    result = lftp(server, f"put {DISTRICT_LARGE} -o roster.zip; ls", implicit=True)
    assert result.returncode == 0, result.stderr
    assert "roster.zip" in result.stdout
    server.wait_idle()
    assert_zip_imported(server, "ftps", LOGIN)
    assert "ftps implicit" in server.audit("login_ok")[0]["detail"]


def assert_one_sync_of_loose_files(server) -> None:
    uploads = server.uploads()
    assert sorted(u["filename"] for u in uploads) == sorted(f.name for f in SCHOOL_SMALL.iterdir())
    assert {(u["status"], u["source"], u["login"]) for u in uploads} == {
        ("imported", "ftps", LOGIN)
    }
    [sync] = server.syncs()
    assert sync["status"] == "applied"
    linked = server.query("select count(*) from ingest_sync_uploads where sync_id = ?", sync["id"])
    assert linked[0][0] == len(uploads)


def test_curl_implicit_loose_files_make_one_sync_after_quiet_period(server):
    # One curl for all seven files (its -T {a,b,...} glob, one control connection), and a
    # quiet period of 5 s: each file's TLS data connection could take more than the fixture's
    # 1 s on a loaded machine, and rightly make two syncs.
    server.query("update districts_district set quiet_period_seconds = 5")
    files = "{" + ",".join(str(f) for f in sorted(SCHOOL_SMALL.iterdir())) + "}"
    result = curl(server, files, implicit=True)
    assert result.returncode == 0, result.stderr
    server.wait_idle()
    assert_one_sync_of_loose_files(server)


def test_lftp_explicit_loose_files_make_one_sync_after_quiet_period(server):
    result = lftp(server, f"mput {SCHOOL_SMALL}/*", implicit=False)
    assert result.returncode == 0, result.stderr
    server.wait_idle()
    assert_one_sync_of_loose_files(server)
    assert sorted(p.name for p in server.root().iterdir()) == sorted(
        f.name for f in SCHOOL_SMALL.iterdir()
    )


def test_temp_then_rename_imports_once_under_final_name(server):
    result = lftp(
        server,
        f"put {DISTRICT_LARGE} -o roster.zip.filepart; mv roster.zip.filepart roster.zip",
        implicit=False,
    )
    assert result.returncode == 0, result.stderr
    server.wait_idle()
    [upload] = server.uploads()
    assert (upload["filename"], upload["status"]) == ("roster.zip", "imported")
    assert len(server.syncs()) == 1
    assert sorted(p.name for p in server.root().iterdir()) == ["roster.zip"]
