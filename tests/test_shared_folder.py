"""With uploads in shared storage (S3), a district's SFTP/FTPS folder is the deployment's: every
front end lists, serves, renames and deletes the same files (the inbox's rows and the bucket's
objects), so a balancer may send a district's next connection to any of them."""

import shutil

import psycopg
import pytest
from ftps_fixtures import lftp
from sftp_fixtures import ORGS, SETUP, Server

from rosterdrop.intake import folder
from rosterdrop.intake.worker import import_set

pytestmark = pytest.mark.slow


def listed(server: Server) -> list[str]:
    out = server.openssh("ls -1\n").stdout.splitlines()
    return sorted(line for line in out if not line.startswith("sftp>"))


def test_front_ends_on_one_bucket_show_one_folder(make_server, postgres_database, s3, tmp_path):
    url, _ = postgres_database
    env = {"ROSTERDROP_DATABASE_URL": url, **s3.env}
    first = make_server(args=("--no-worker",), **env)
    second = make_server(args=("--no-worker",), **env)
    first.cli("shell", "-c", SETUP.format(key=str(first.key) + ".pub"))
    keys = first.cli("hostkey", "--public").splitlines()
    with psycopg.connect(url) as db:
        [(pem,)] = db.execute("select certificate from intake_serverkey where name = 'ftps'")
    for server in (first, second):
        server.known_hosts.write_text("".join(f"[127.0.0.1]:{server.port} {k}\n" for k in keys))
        server.ftps_cert().write_text(pem)

    first.openssh(f"put {ORGS} orgs.csv\nput {ORGS} orgs.csv.filepart\n")
    # The upload is listed by the other front end, size included, and downloaded from the
    # bucket; the file still waiting for its rename stays where it is being sent.
    assert listed(second) == ["orgs.csv"]
    assert str(ORGS.stat().st_size) in second.openssh("ls -l orgs.csv\n").stdout
    got = tmp_path / "got.csv"
    second.openssh(f"get orgs.csv {got}\n")
    assert got.read_bytes() == ORGS.read_bytes()
    assert not list((second.data_dir / "tmp").rglob("*"))  # the download's copy is gone

    # Renamed through one front end, downloaded, renamed again and deleted over FTPS through
    # the other: no import had taken it (no worker runs), so it is withdrawn, bytes and all.
    second.openssh("rename orgs.csv kept.csv\n")
    got = tmp_path / "ftps.csv"
    ftps = lftp(first, f"cls -1; get kept.csv -o {got}; mv kept.csv k2.csv", implicit=True)
    assert ftps.returncode == 0, ftps.stderr
    assert ftps.stdout.split() == ["kept.csv", "orgs.csv.filepart"]
    assert got.read_bytes() == ORGS.read_bytes()
    assert listed(second) == ["k2.csv"]
    gone = lftp(first, "rm k2.csv; cls -1", implicit=False)
    assert gone.returncode == 0 and gone.stdout.split() == ["orgs.csv.filepart"], gone.stderr
    assert listed(second) == []
    assert listed(first) == ["orgs.csv.filepart"]
    with psycopg.connect(url) as db:
        [upload] = db.execute("select stored_path, status, purged_at is not null from inbox_upload")
        [audit] = db.execute("select login, detail from audit_auditevent where kind = 'retention'")
    assert upload == ("", "expired", True)
    assert s3.objects() == []
    assert audit[0] == "alpha_admin_district_st" and audit[1].startswith("deleted raw upload")


def test_a_file_an_import_took_keeps_its_record_when_deleted(district, school, s3, tmp_path):
    """Deleted from the shared folder after its import: it leaves the listing, the upload and
    its bytes stay (the sync refers to them; retention deletes them in time)."""
    sent = tmp_path / "orgs.csv"
    shutil.copy(school / "orgs.csv", sent)
    upload = folder.complete(district, "orgs.csv", sent, "sftp", "lftp", "127.0.0.1")
    import_set(district, [upload])
    root = folder.open_root(district.slug)
    folder.remove(district, root, "orgs.csv", "lftp", "127.0.0.1")
    upload.refresh_from_db()
    assert folder.listing(district, root) == []
    assert (upload.status, upload.outcome, upload.purged_at) == ("imported", "Applied.", None)
    assert s3.objects("inbox/") == [upload.stored_path]
