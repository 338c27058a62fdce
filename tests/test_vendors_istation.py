"""Istation's mails and custom templates (issue 14, item 5): a district data manager who
made import templates in the console and reads what happened in the mail."""

import pytest

from rosterdrop.custom.templates import suggest
from rosterdrop.districts.models import District
from rosterdrop.ingest.pipeline import import_path
from rosterdrop.notify.models import OutboxMail, Subscription

pytestmark = pytest.mark.django_db(transaction=True)

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
    # Not one issue per row about the same missing schools.
    assert not sync.issues.filter(code="reference_missing").exists()
