"""What the service hands out as files: formula-safe CSV cells, headers included, and file names
escaped in Content-Disposition (RFC 6266) however a district named its file."""

import csv
import io
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.urls import reverse
from django.utils import timezone
from web_fixtures import signed_in

from rosterdrop.csvsafe import cell, csv_text
from rosterdrop.custom.templates import save_template, suggest
from rosterdrop.formats import FORMATS
from rosterdrop.formats.download import file_templates
from rosterdrop.ingest.syncs import import_path

pytestmark = pytest.mark.django_db(transaction=True)

FORMULA = '=HYPERLINK("http://evil.test","x")'
NAME = 'Élèves "2025".csv'  # a quote and non-ASCII letters


def test_every_formula_start_gets_an_apostrophe():
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert cell(start + "1") == "'" + start + "1"
    assert cell("O'Brien") == "O'Brien" and cell(None) == "" and cell(12) == "12"
    rows = list(
        csv.reader(io.StringIO(csv_text([[FORMULA, "a;b"], ["-1", "x"]], ";")), delimiter=";")
    )
    assert rows == [["'" + FORMULA, "a;b"], ["'-1", "x"]]


@pytest.fixture
def custom_template(district):
    district.format = "custom"
    district.save()
    header = [FORMULA, "id", "fname", "lname", "grade", "campus_id"]
    template = suggest(district, NAME, "students", header, delimiter=";")
    return save_template(template)


def test_custom_template_download_neutralises_its_header_and_escapes_its_name(
    district, admin, custom_template
):
    response = signed_in(admin).get(reverse("web:file_template", args=[district.slug, NAME]))
    assert response.status_code == 200
    [header] = list(csv.reader(io.StringIO(response.content.decode()), delimiter=";"))
    assert header[0] == "'" + FORMULA and header[1:3] == ["id", "fname"]
    assert response["Content-Disposition"] == f"attachment; filename*=utf-8''{quote(NAME)}"


def test_template_files_of_every_format_are_formula_safe():
    for spec in FORMATS.values():
        files = file_templates(spec, "district", "=cmd|' /C calc'!A0")
        for name, text in files.items():
            if name.endswith(".csv"):
                for row in csv.reader(io.StringIO(text)):
                    assert not any(c.startswith(("=", "+", "-", "@")) for c in row), name


def test_issue_log_header_and_cells_are_formula_safe(district, admin, school):
    from helpers import edit

    edit(school / "users.csv", 3, "enabledUser", FORMULA)
    sync = import_path(district, school)
    response = signed_in(admin).get(reverse("web:issues_csv", args=[district.slug, sync.pk]))
    cells = [c for row in csv.reader(io.StringIO(response.content.decode())) for c in row]
    assert "'" + FORMULA in cells and FORMULA not in cells


def test_raw_upload_named_with_a_quote_and_accents_downloads_under_an_escaped_name(
    district, admin, operator, school, tmp_path
):
    from rosterdrop.inbox.store import receive

    source = tmp_path / "raw"
    source.write_bytes(b"sourcedId\n1\n")
    upload = receive(district, NAME, source, "web")
    expected = f"attachment; filename*=utf-8''{quote(NAME)}"
    web = signed_in(admin).get(reverse("web:upload_raw", args=[district.slug, upload.pk]))
    assert web["Content-Disposition"] == expected
    assert b"".join(web.streaming_content) == b"sourcedId\n1\n"
    ascii_name = 'a "b".csv'
    upload = receive(district, ascii_name, source, "web")
    web = signed_in(admin).get(reverse("web:upload_raw", args=[district.slug, upload.pk]))
    assert web["Content-Disposition"] == 'attachment; filename="a \\"b\\".csv"'


def test_template_export_name_is_escaped(district, admin):
    response = signed_in(admin).get(reverse("web:template_export", args=[district.slug]))
    assert response["Content-Disposition"] == 'attachment; filename="springfield-templates.json"'


def test_a_raw_upload_answers_alike_on_the_console_and_the_api(district, admin, tmp_path, settings):
    """One inbox function serves both: the same bytes and name, one audit record per download
    saying which way it went; once retention deleted the bytes, 404 on both, nothing audited."""
    from django.core.management import call_command
    from django.test import Client

    from rosterdrop.audit.models import AuditEvent
    from rosterdrop.inbox.models import Upload
    from rosterdrop.inbox.retention import purge
    from rosterdrop.inbox.store import receive

    out = io.StringIO()
    call_command("token", "create", admin.username, stdout=out)
    api = Client(headers={"Authorization": f"Bearer {out.getvalue().strip()}"})
    source = tmp_path / "users.csv"
    source.write_bytes(b"sourcedId\n1\n")
    upload = receive(district, NAME, source, "web")
    paths = {
        "web": reverse("web:upload_raw", args=[district.slug, upload.pk]),
        "api": f"/api/uploads/{upload.pk}/raw",
    }
    clients = {"web": signed_in(admin), "api": api}
    for via, path in paths.items():
        response = clients[via].get(path)
        assert response.status_code == 200
        assert response["Content-Disposition"] == f"attachment; filename*=utf-8''{quote(NAME)}"
        assert b"".join(response.streaming_content) == b"sourcedId\n1\n"
    downloads = AuditEvent.objects.filter(kind="download").order_by("id")
    assert [(e.login, e.detail) for e in downloads] == [
        (admin.username, f"{via}: raw upload {upload.pk} {NAME} of springfield") for via in paths
    ]

    settings.UPLOAD_RETENTION_DAYS = 30
    Upload.objects.filter(pk=upload.pk).update(
        status="imported", received_at=timezone.now() - timedelta(days=31)
    )
    assert [p.upload.pk for p in purge()] == [upload.pk]
    for via, path in paths.items():
        assert clients[via].get(path).status_code == 404
    gone = api.get(paths["api"]).json()
    assert gone == {"detail": "This file is no longer kept (retention)."}
    assert downloads.count() == 2
