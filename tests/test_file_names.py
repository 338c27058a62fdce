"""One answer to "is this file mine?" (issue 14, item 1): the format spec says it
(`FormatSpec.claim`), and match, the SFTP/FTPS worker, the web upload, the CLI and the mails
all ask it, so the same misnamed file gets the same outcome and the same words everywhere."""

import json
import shutil
import zipfile

import pytest
from conftest import SAMPLES
from django.core.management import call_command
from django.urls import reverse
from web_fixtures import signed_in

from rosterdrop.formats import FORMATS
from rosterdrop.inbox.store import receive
from rosterdrop.ingest.engine import Settings, check
from rosterdrop.intake import worker

OEA = SAMPLES / "sds-openeducationanalytics" / "v1-lowercase"  # Microsoft's, in lower case


def test_the_format_spec_answers_exact_case_insensitive_and_did_you_mean():
    oneroster, sds = FORMATS["oneroster-1.1"], FORMATS["sds-v1"]
    assert oneroster.claim("users.csv").name == "users.csv"
    assert oneroster.claim("manifest.csv").mine and oneroster.claim("roster.ZIP").package
    wrong = oneroster.claim("Users.csv")
    assert not wrong.mine and wrong.near == "users.csv"
    assert "Did you mean users.csv?" in wrong.reason and "case-sensitive" in wrong.reason
    assert sds.claim("school.csv").name == "School.csv"  # SDS v1: any case
    assert not oneroster.claim("notes.txt").near


def test_a_misnamed_file_in_a_zip_is_told_in_the_words_of_the_spec(school, tmp_path):
    (school / "Categories.csv").write_text("sourcedId,status,dateLastModified,title\n")
    path = tmp_path / "roster.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in school.iterdir():
            z.write(f, f.name)
    found = check([path], Settings.named("oneroster-1.1")).as_dict()["issues"]
    [misnamed] = [i for i in found if i["code"] == "file_misnamed"]
    assert misnamed["message"] == FORMATS["oneroster-1.1"].claim("Categories.csv").reason
    assert "Did you mean categories.csv?" in misnamed["message"]


@pytest.mark.django_db(transaction=True)
def test_sds_v1_lower_case_files_are_claimed_by_the_worker_as_by_rosterdrop_import(district):
    district.format, district.quiet_period_seconds = "sds-v1", 0
    district.save()
    for path in sorted(OEA.iterdir()):
        receive(district, path.name, path, "sftp", login="springfield")
    worker.run_once()
    uploads = list(district.uploads.all())
    assert {u.status for u in uploads} == {"imported"}, [u.outcome for u in uploads]
    [sync] = district.syncs.all()
    assert sync.status == "applied" and sync.changes["users"]["added"] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("import_inline")
def test_a_wrongly_cased_file_is_unmatched_with_the_same_words_over_sftp_the_web_and_the_cli(
    district, admin, tmp_path, capsys
):
    sent = tmp_path / "Users.csv"
    shutil.copy(SAMPLES / "oneroster11-generated" / "school-small" / "users.csv", sent)
    reason = FORMATS["oneroster-1.1"].claim("Users.csv").reason
    # SFTP/FTPS: the worker.
    receive(district, sent.name, sent, "sftp", login="springfield")
    worker.run_once()
    # The web upload: no sync, the uploads page, the same sentence.
    with sent.open("rb") as f:
        page = signed_in(admin).post(
            reverse("web:upload", args=[district.slug]), {"files": [f]}, follow=True
        )
    assert page.redirect_chain[-1][0] == reverse("web:uploads", args=[district.slug])
    assert "Did you mean users.csv?" in page.content.decode()
    # The command line.
    with pytest.raises(SystemExit) as done:
        call_command("import", str(sent), "--district", district.slug, "--json")
    assert done.value.code == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["unmatched"] == [{"filename": "Users.csv", "outcome": reason}]
    uploads = list(district.uploads.order_by("pk"))
    assert [(u.source, u.status, u.outcome) for u in uploads] == [
        ("sftp", "unmatched", reason),
        ("web", "unmatched", reason),
        ("cli", "unmatched", reason),
    ]
    assert not district.syncs.exists()


@pytest.mark.django_db(transaction=True)
def test_a_custom_district_web_upload_of_a_wrong_case_is_unmatched_not_a_broken_sentence(
    district, admin, tmp_path
):
    from rosterdrop.custom.templates import ImportTemplate

    district.format = "custom"
    district.save()
    ImportTemplate.objects.create(
        district=district,
        file_name="Users2018.csv",
        kind="students",
        columns={"ID": "id", "Campus": "school_id", "First": "first_name", "Last": "last_name"},
    )
    sent = tmp_path / "users2018.csv"
    sent.write_text("ID,Campus,First,Last\n1,001,Ann,Lee\n")
    with sent.open("rb") as f:
        page = signed_in(admin).post(
            reverse("web:upload", args=[district.slug]), {"files": [f]}, follow=True
        )
    text = page.content.decode()
    assert "Did you mean Users2018.csv?" in text and "holds no the" not in text
    assert district.uploads.get().status == "unmatched"


@pytest.mark.django_db(transaction=True)
def test_the_unmatched_file_mail_carries_the_reason_and_the_did_you_mean(district, settings):
    from rosterdrop.notify.models import OutboxMail, Subscription

    settings.EMAIL_HOST = "127.0.0.1"
    Subscription.objects.create(district=district, email="data@springfield.test")
    sent = SAMPLES / "oneroster11-generated" / "school-small" / "users.csv"
    receive(district, "Users.csv", sent, "sftp", login="springfield")
    worker.run_once()
    [queued] = OutboxMail.objects.all()
    assert "Did you mean users.csv?" in queued.body
    assert FORMATS["oneroster-1.1"].claim("Users.csv").reason in queued.body


@pytest.mark.slow
def test_microsofts_lower_case_sds_v1_sample_over_sftp_imports_exactly_as_through_rosterdrop_import(
    make_server, tmp_path
):
    server = make_server()
    server.query("update districts_district set format = 'sds-v1'")
    puts = "".join(f'put "{p}"\n' for p in sorted(OEA.iterdir()))
    server.openssh(puts)
    server.wait_idle()
    uploads = server.uploads()
    assert sorted(u["filename"] for u in uploads) == sorted(p.name for p in OEA.iterdir())
    assert {u["status"] for u in uploads} == {"imported"}, [u["outcome"] for u in uploads]
    [over_sftp] = server.syncs()
    by_cli = json.loads(server.cli("import", str(OEA), "--district", "beta", "--json"))
    shown = json.loads(server.cli("sync", "show", str(over_sftp["id"]), "--json"))

    def outcome(sync: dict) -> tuple:
        issues = sorted((i["code"], i["file"], i["line"], i["message"]) for i in sync["issues"])
        return sync["status"], sync["changes"], sync["files"], issues

    assert outcome(shown) == outcome(by_cli)
    assert shown["status"] == "applied" and shown["changes"]["users"]["added"] > 0
