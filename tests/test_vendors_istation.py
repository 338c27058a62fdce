"""Istation's mails and custom templates (issue 14, item 5): a district data manager who
made import templates in the console and reads what happened in the mail."""

import pytest
import sftp_fixtures
import test_notify

from rosterdrop.custom.templates import suggest
from rosterdrop.districts.models import District
from rosterdrop.ingest.syncs import import_path
from rosterdrop.notify.models import OutboxMail, Subscription

pytestmark = pytest.mark.django_db(transaction=True)
# A real serve, and a real SMTP sink.
smtp, smtp_port = test_notify.smtp, test_notify.smtp_port

SCHOOLS = "Campus ID,School Name\n001,Elm Elementary\n002,Oak Middle\n"
STUDENTS = (
    "campus_id,id,fname,lname,grade\n"
    "001,000123,Zoe,Brien,3\n"
    "001,000124,Jose,Munoz,3\n"
    "002,000200,,Angelo,7\n"  # no first name: a row error
)


@pytest.fixture
def istown(db, settings) -> District:
    settings.EMAIL_HOST = "127.0.0.1"  # mail is queued (and read here from the outbox)
    district = District.objects.create(slug="istown", name="Istown ISD", format="custom")
    Subscription.objects.create(district=district, email="data@istown.test", on_success=True)
    return district


def template(district: District, name: str, kind: str, sample: str) -> None:
    suggest(district, name, kind, sample.splitlines()[0].split(",")).save()


def mail_of(sync) -> str:
    [mail] = OutboxMail.objects.filter(key__startswith=f"sync:{sync.pk}:")
    return mail.body


def test_every_result_mail_carries_counts_error_counts_first_issues_and_a_link(istown, tmp_path):
    template(istown, "Campuses.csv", "schools", SCHOOLS)
    template(istown, "Students.csv", "students", STUDENTS)
    (tmp_path / "Campuses.csv").write_text(SCHOOLS)
    (tmp_path / "Students.csv").write_text(STUDENTS)
    sync = import_path(istown, tmp_path)
    assert sync.status == "applied_with_errors"
    body = mail_of(sync)
    assert "Students.csv: 3 rows" in body and "Campuses.csv: 2 rows" in body
    assert "users: 2 added" in body and "orgs: 2 added" in body
    assert "Issues: 0 fatal, 1 error" in body
    assert "Students.csv:4: " in body  # the first issue, with file:line
    assert f"Full log: http://127.0.0.1:8000/d/istown/syncs/{sync.pk}/" in body
    # The same files again: nothing changed, and the mail still says what was read.
    (tmp_path / "Students.csv").write_text(STUDENTS + "\n")
    again = import_path(istown, tmp_path)
    assert again.status in ("no_changes", "applied_with_errors")
    assert "Students.csv: 3 rows" in mail_of(again) and "Issues: 0 fatal, 1 error" in mail_of(again)


def test_a_students_only_custom_district_is_told_once_that_schools_are_missing(istown, tmp_path):
    template(istown, "Students.csv", "students", STUDENTS)
    (tmp_path / "Students.csv").write_text(STUDENTS)
    sync = import_path(istown, tmp_path)
    [issue] = sync.issues.filter(code="reference_not_sent")
    assert (issue.file, issue.line, issue.column) == ("Students.csv", 2, "campus_id")
    assert "No file of this upload holds any school" in issue.message
    assert ": 001." in issue.message and "2 rows" in issue.message  # line 4 has its own error
    assert "import template of the kind schools" in issue.message
    assert "--make-schools" in issue.message  # or the template makes them from their codes
    # Not one issue per row about the same missing schools.
    assert not sync.issues.filter(code="reference_missing").exists()


# The district's own export, with its own column names (odd ones included).
EXPORT = (
    "Campus ID,Student ID,First Name,Apellido,Grade Lvl\n"
    "001,000123,Zoe,Brien,3\n"
    "001,000124,Jose,Munoz,3\n"
)


@pytest.mark.slow
def test_istation_exact_names_over_sftp_and_ftps_are_mailed_and_a_wrong_case_is_mailed_with_the_did_you_mean(  # noqa: E501
    make_server, smtp, smtp_port, tmp_path
):
    from ftps_fixtures import curl

    server = sftp_fixtures.mailing_server(
        make_server, smtp_port, "data@alpha.test", format="custom", quiet_period_seconds=1
    )
    export = tmp_path / "Users2018.csv"
    export.write_text(EXPORT, encoding="utf-8")
    campuses = tmp_path / "Campuses.csv"
    campuses.write_text(SCHOOLS, encoding="utf-8")
    server.cli("template", "add", str(campuses), "--district", "alpha", "--kind", "schools")
    server.cli("template", "add", str(export), "--district", "alpha", "--kind", "students",
               "--map", "Apellido=last_name", "--map", "Grade Lvl=grade")  # fmt: skip
    # SFTP: the exact names.
    server.openssh(f'put "{campuses}"\nput "{export}"\n')
    server.wait_idle()
    [first] = test_notify.wait_for(lambda: smtp.to("data@alpha.test"), 30)
    body = first.get_content()
    assert "roster updated" in first["Subject"] and "users: 2 added" in body
    assert "Users2018.csv: 2 rows" in body and "Full log: " in body
    # FTPS with the dotted login: the exact name again (a change), then a wrong case.
    export.write_text(EXPORT.replace("Zoe,Brien", "Zoe,Brienne"), encoding="utf-8")
    assert curl(server, export, implicit=False, name="Users2018.csv").returncode == 0
    assert curl(server, export, implicit=True, name="users2018.csv").returncode == 0
    server.wait_idle()
    mails = test_notify.wait_for(
        lambda: len(smtp.to("data@alpha.test")) >= 3 and smtp.to("data@alpha.test"), 30
    )
    updated = [m for m in mails if "roster updated" in m["Subject"]][-1].get_content()
    assert "users: 0 added, 1 updated" in updated
    [unmatched] = [m for m in mails if "was not imported" in m["Subject"]]
    said = unmatched.get_content()
    assert "users2018.csv" in unmatched["Subject"] and "Did you mean Users2018.csv?" in said


def test_a_students_template_can_make_schools_from_their_codes(istown, tmp_path):
    from rosterdrop.roster.models import records

    suggest(
        istown, "Students.csv", "students", STUDENTS.splitlines()[0].split(","), make_schools=True
    ).save()
    (tmp_path / "Students.csv").write_text(STUDENTS)
    sync = import_path(istown, tmp_path)
    assert not sync.issues.filter(code__startswith="reference_").exists()
    schools = {r.sourced_id: r.data["name"] for r in records(istown, "orgs")}
    assert schools == {"001": "001"}  # line 4 (its own error) names 002: not loaded
    roles = {(r.data["userSourcedId"], r.data["orgSourcedId"]) for r in records(istown, "roles")}
    assert roles == {("000123", "001"), ("000124", "001")}


def test_the_wizard_saves_the_make_schools_option(istown, db):
    from django.test import Client
    from django.urls import reverse
    from test_web_wizard import mapping, start
    from web_fixtures import make_user

    client = Client()
    client.force_login(make_user("data@istown.test", istown))
    start(client, istown)
    client.post(reverse("web:template_columns", args=["istown"]), mapping(**{"col-3": "last_name"}))
    page = client.get(reverse("web:template_check", args=["istown"])).content.decode()
    assert "Make a school of each school code" in page
    client.post(
        reverse("web:template_check", args=["istown"]),
        {"file_name": "Student Export.csv", "mode": "snapshot", "make_schools": "on"},
    )
    assert istown.templates.get().make_schools
