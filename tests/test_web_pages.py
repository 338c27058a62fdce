"""The console's pages on real imports: web upload into the pipeline, a sync's diff and issue
log (CSV safe against formulas), approval, SIS data vs roster, the data assistant, audit."""

import csv
import io

import pytest
from django.urls import reverse
from helpers import edit, rows, write
from web_fixtures import held_sync, signed_in

from rosterdrop.audit.models import AuditEvent
from rosterdrop.inbox import store
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.syncs import import_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("import_inline")]


def upload_files(client, district, paths):
    files = [p.open("rb") for p in paths]
    try:
        return client.post(reverse("web:upload", args=[district.slug]), {"files": files})
    finally:
        for f in files:
            f.close()


def test_web_upload_runs_the_pipeline_and_keeps_the_bytes(district, admin, school, backend):
    """On the data folder and on S3 (each file one object, read back for the download)."""
    client = signed_in(admin)
    paths = sorted(school.iterdir())
    response = upload_files(client, district, paths)
    sync = Sync.objects.get(district=district)
    assert (
        response.status_code == 302 and response["Location"] == f"/d/springfield/syncs/{sync.pk}/"
    )
    assert sync.status == "applied" and sync.changes["users"]["added"] > 0
    uploads = Upload.objects.filter(district=district, source="web")
    assert sorted(u.filename for u in uploads) == [p.name for p in paths]
    assert {u.login for u in uploads} == {admin.username}
    if backend:
        assert backend.objects("inbox/") == sorted(u.stored_path for u in uploads)
    users = uploads.get(filename="users.csv")
    raw = client.get(reverse("web:upload_raw", args=[district.slug, users.pk]))
    assert raw["Content-Disposition"] == 'attachment; filename="users.csv"'
    assert b"".join(raw.streaming_content) == (school / "users.csv").read_bytes()
    assert AuditEvent.objects.filter(kind="upload", login=admin.username).count() == len(paths)
    assert AuditEvent.objects.filter(kind="download", login=admin.username).exists()
    page = client.get(response["Location"])
    assert b"Applied" in page.content and b"users.csv" in page.content


def test_sync_page_shows_field_level_before_and_after(district, admin, school):
    import_path(district, school)
    before = rows(school / "users.csv")[3]
    edit(school / "users.csv", 4, "familyName", "Okonkwo")
    sync = import_path(district, school)
    page = signed_in(admin).get(reverse("web:sync", args=[district.slug, sync.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    assert before[0] in text and "familyName" in text
    assert before[9] in text and "Okonkwo" in text  # old and new family name
    added = signed_in(admin).get(
        reverse("web:sync", args=[district.slug, sync.pk - 1]),
        {"action": "added", "entity": "orgs"},
    )
    assert b"Mulberry Ashby Elementary School" in added.content


def test_records_a_sync_added_are_paged_across_entities(district, admin, school):
    """Each entity is its own table: a page of added records may end one and begin the next."""
    sync = import_path(district, school)
    total = sum(c["added"] for c in sync.changes.values())
    client = signed_in(admin)
    url = reverse("web:sync", args=[district.slug, sync.pk])
    shown = []
    for number in range(1, -(-total // 50) + 1):
        page = client.get(url, {"action": "added", "cpage": number}).context["change_page"]
        assert page.paginator.count == total
        shown += [(record.entity, record.sourced_id) for record in page]
    assert total > 50 and len(shown) == len(set(shown)) == total
    assert shown[0][0] == "orgs" and shown[-1][0] == "enrollments"


def test_a_held_sync_shows_its_added_records_once_approved(district, operator, school):
    import_path(district, school)
    users = rows(school / "users.csv")
    newcomer = list(users[1])
    newcomer[users[0].index("sourcedId")] = "newcomer-1"
    write(school / "users.csv", [*users, newcomer])
    enrollments = rows(school / "enrollments.csv")
    write(school / "enrollments.csv", enrollments[: len(enrollments) // 2])
    sync = import_path(district, school)
    assert sync.status == "held" and sync.changes["users"]["added"] == 1  # and their role
    client = signed_in(operator)
    url = reverse("web:sync", args=[district.slug, sync.pk])
    assert client.get(url, {"action": "added"}).context["change_page"].paginator.count == 0
    client.post(reverse("web:approve", args=[district.slug, sync.pk]))
    page = client.get(url, {"action": "added"}).context["change_page"]
    shown = [(r.entity, r.sourced_id.split(":")[0]) for r in page]
    assert shown == [("users", "newcomer-1"), ("roles", "newcomer-1")]


def test_issue_log_filters_and_downloads_formula_safe(district, admin, school):
    edit(school / "users.csv", 3, "enabledUser", '=HYPERLINK("http://x")')
    edit(school / "users.csv", 5, "role", "@wizard")
    sync = import_path(district, school)
    assert sync.status == "applied_with_errors"
    client = signed_in(admin)
    page = client.get(reverse("web:sync", args=[district.slug, sync.pk]), {"code": "enum_invalid"})
    assert b"@wizard" in page.content and b"HYPERLINK" not in page.content
    response = client.get(reverse("web:issues_csv", args=[district.slug, sync.pk]))
    assert response["Content-Disposition"].startswith("attachment;")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    values = {row["value"] for row in table}
    assert '\'=HYPERLINK("http://x")' in values and "'@wizard" in values
    assert all(row["line"] for row in table if row["severity"] == "error")
    only = client.get(
        reverse("web:issues_csv", args=[district.slug, sync.pk]), {"code": "enum_invalid"}
    )
    assert len(list(csv.DictReader(io.StringIO(only.content.decode())))) == 1


def test_operator_approves_a_held_sync(district, operator, school):
    sync = held_sync(district, school)
    client = signed_in(operator)
    page = client.get(reverse("web:sync", args=[district.slug, sync.pk]))
    assert b"Approve and apply" in page.content and b"enrollments" in page.content
    response = client.post(reverse("web:approve", args=[district.slug, sync.pk]))
    assert response.status_code == 302
    sync.refresh_from_db()
    assert sync.status == "applied" and sync.decided_by == operator.username
    again = client.post(reverse("web:approve", args=[district.slug, sync.pk]), follow=True)
    assert b"not held" in again.content


def test_dashboard_shows_status_and_chart(district, operator, school):
    held_sync(district, school)
    page = signed_in(operator).get("/")
    text = page.content.decode()
    assert "Held, awaiting approval" in text
    assert text.count("<rect") == 2 and "<svg" in text


def test_sis_data_and_roster_are_searchable(district, admin, school, backend, settings):
    """On the data folder and on S3 (the page reads a copy of the object, deleted after)."""
    import_path(district, school)
    student = rows(school / "users.csv")[2]
    client = signed_in(admin)
    upload = Upload.objects.get(district=district, filename="users.csv")
    sis = client.get(
        reverse("web:sis", args=[district.slug]),
        {"upload": upload.pk, "file": "users.csv", "q": student[0].upper()},
    )
    assert student[8] in sis.content.decode() and b"1 row containing" in sis.content
    assert not list((settings.DATA_DIR / "tmp").glob("read-*"))
    roster = client.get(
        reverse("web:roster", args=[district.slug]), {"entity": "users", "q": student[9]}
    )
    assert student[0] in roster.content.decode()
    person = client.get(reverse("web:record", args=[district.slug, "users", student[0]]))
    assert person.status_code == 200 and b"Enrollments" in person.content
    assert b"Mulberry" not in person.content or b"student at" in person.content


def test_data_assistant_finds_gaps_and_traces_ids(district, admin, school):
    table = rows(school / "enrollments.csv")
    header = table[0]
    user_col, role_col = header.index("userSourcedId"), header.index("role")
    lonely = next(r[user_col] for r in table[1:] if r[role_col] == "student")
    write(school / "enrollments.csv", [r for r in table if r[user_col] != lonely])
    users = rows(school / "users.csv")
    teacher_line = next(i for i, r in enumerate(users) if r[5] == "teacher") + 1
    edit(school / "users.csv", teacher_line, "givenName", "")
    sync = import_path(district, school)
    client = signed_in(admin)
    page = client.get(reverse("web:assistant", args=[district.slug])).content.decode()
    assert lonely in page
    assert "Staff not imported" in page and f"users.csv line {teacher_line}" in page
    skipped_id = users[teacher_line - 1][0]
    why = client.get(reverse("web:why", args=[district.slug]), {"id": skipped_id}).content.decode()
    assert "No record has this ID" in why and f"users.csv line {teacher_line}" in why
    assert f"#{sync.pk}" in why


def test_settings_notifications_and_audit(district, operator, admin):
    client = signed_in(operator)
    url = reverse("web:settings", args=[district.slug])
    client.post(
        url,
        {
            "name": "Springfield USD",
            "format": "oneroster-1.1",
            "quiet_period_seconds": 120,
            "removal_threshold": "0.2",
            "fallback_encoding": "cp1252",
            "time_zone": "America/Chicago",
        },
    )
    district.refresh_from_db()
    assert district.name == "Springfield USD" and district.removal_threshold == 0.2
    assert district.time_zone == "America/Chicago"
    assert signed_in(admin).post(url, {"name": "x"}).status_code == 403
    signed_in(admin).post(
        reverse("web:subscribe", args=[district.slug]),
        {"email": "it@springfield.test", "on_success": "on"},
    )
    assert district.subscriptions.get().on_success
    audit = client.get(reverse("web:audit")).content.decode()
    assert "changed settings of springfield" in audit and "it@springfield.test" in audit
    mine = signed_in(admin).get(reverse("web:audit")).content.decode()
    assert "it@springfield.test" in mine and "changed settings" not in mine


def test_file_template_download(district, admin):
    response = signed_in(admin).get(reverse("web:file_template", args=[district.slug, "users.csv"]))
    assert response["Content-Disposition"] == 'attachment; filename="users.csv"'
    assert response.content.startswith(b"sourcedId,")


def test_overview_shows_sftp_and_ftps_connection_settings(district, admin, settings, tmp_path):
    from rosterdrop.intake import tlscert
    from rosterdrop.intake.models import Login

    # A data folder of its own: whether a certificate exists must not depend on earlier tests.
    settings.DATA_DIR = tmp_path

    Login.objects.create(district=district, name="ana_admin_springfield_tx")
    settings.FTPS_ENABLED, settings.FTPS_PORT, settings.FTPS_IMPLICIT_PORT = True, 2121, 9990
    page = signed_in(admin).get(reverse("web:district", args=[district.slug])).content.decode()
    assert "ana_admin_springfield_tx" in page and "ana.admin.springfield.tx" in page
    assert ">2121<" in page and ">9990<" in page
    assert "made when FTPS first starts" in page
    tlscert.load_or_create()
    page = signed_in(admin).get(reverse("web:district", args=[district.slug])).content.decode()
    assert tlscert.fingerprint() in page
    settings.FTPS_ENABLED = False
    page = signed_in(admin).get(reverse("web:district", args=[district.slug])).content.decode()
    assert "ana.admin.springfield.tx" not in page


def test_a_web_upload_over_the_quota_is_refused_and_nothing_is_kept(district, admin, school):
    """The quota SFTP and FTPS transfers hold (store.quota_room) holds for the web page too."""
    district.upload_quota_bytes = 1000
    district.save()
    inbox = store.inbox_dir(district)
    held = set(inbox.iterdir()) if inbox.exists() else set()
    client = signed_in(admin)
    files = [(school / "users.csv").open("rb")]
    try:
        page = client.post(
            reverse("web:upload", args=[district.slug]), {"files": files}, follow=True
        )
    finally:
        files[0].close()
    text = page.content.decode()
    assert "Storage quota exceeded: the district may keep 1000 bytes" in text
    assert "nothing was kept" in text
    assert not Upload.objects.filter(district=district).exists()
    assert not Sync.objects.filter(district=district).exists()
    assert (set(inbox.iterdir()) if inbox.exists() else set()) == held
