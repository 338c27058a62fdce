"""The template wizard's pages: kind, sample, columns (checked as they change), check against
the sample, save under the exact file name; only for one's own district, CSRF on every post."""

import json

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from web_fixtures import signed_in

from rosterdrop.audit.models import AuditEvent
from rosterdrop.custom.models import ImportTemplate
from rosterdrop.districts.models import District

pytestmark = pytest.mark.django_db(transaction=True)

# "Apellido" suggests nothing: it is mapped by hand. Line 3 has a date the format refuses.
SAMPLE = (
    "Campus ID;Student ID;First Name;Apellido;Birth Date;Homeroom\n"
    "001;000123;Zoë;O'Brien;04/02/2017;12B\n"
    "001;000124;José;Muñoz;31/12/2016;12B\n"
)


def url(name: str, district) -> str:
    return reverse(f"web:{name}", args=[district.slug])


def start(client, district, text: str = SAMPLE, name: str = "Student Export.csv"):
    """Steps 1 and 2: students, then the sample; returns the columns page."""
    assert client.post(url("template_kind", district), {"kind": "students"}).status_code == 302
    sample = SimpleUploadedFile(name, text.encode(), content_type="text/csv")
    response = client.post(url("template_sample", district), {"sample": sample, "delimiter": ""})
    assert response.status_code == 302, response.content.decode()
    return client.get(response["Location"])


def mapping(**overrides: str) -> dict:
    columns = ["school_id", "id", "first_name", "", "birth_date", ""]
    data = {f"col-{i}": field for i, field in enumerate(columns)}
    return {**data, **overrides, "date_format": overrides.get("date_format", "%m/%d/%Y")}


def test_wizard_builds_a_template_under_the_exact_file_name(district, admin):
    district.format = "custom"
    district.save()
    client = signed_in(admin)
    page = client.get(url("template_kind", district)).content.decode()
    assert "Students in classes" in page and "users, roles, demographics" in page

    columns = start(client, district).content.decode()
    assert "Apellido" in columns and "O&#x27;Brien" in columns  # its first values shown
    assert columns.count("suggested</span>") == 4  # campus, student id, first name, birth date
    assert "no column is mapped to Last name" in columns

    # A select changes: htmx asks for the check alone, and gets it without the page.
    check = client.post(url("template_columns", district), mapping(), HTTP_HX_REQUEST="true")
    assert "Last name" in check.content.decode() and "<html" not in check.content.decode()
    fixed = client.post(
        url("template_columns", district), mapping(**{"col-3": "last_name"}), HTTP_HX_REQUEST="true"
    )
    assert 'id="mapping-ok"' in fixed.content.decode()

    # Without htmx the same post moves on to the check against the sample.
    response = client.post(url("template_columns", district), mapping(**{"col-3": "last_name"}))
    assert response["Location"] == url("template_check", district)
    checked = client.get(response["Location"]).content.decode()
    assert "date_invalid" in checked and "31/12/2016" in checked  # inline, at its line
    assert 'value="Student Export.csv"' in checked

    saved = client.post(
        url("template_check", district), {"file_name": "Student Export.csv", "mode": "add_only"}
    )
    assert saved["Location"] == url("wizard", district)
    template = ImportTemplate.objects.get(district=district)
    assert (template.file_name, template.kind, template.mode) == (
        "Student Export.csv",
        "students",
        "add_only",
    )
    assert template.columns["Apellido"] == "last_name" and template.columns["Homeroom"] == ""
    assert (template.delimiter, template.date_format) == (";", "%m/%d/%Y")
    assert AuditEvent.objects.filter(detail__contains="saved import template").exists()
    listing = client.get(url("wizard", district)).content.decode()
    assert "Student Export.csv" in listing and "semicolon" in listing
    exported = json.loads(client.get(url("template_export", district)).content)
    assert exported["templates"][0]["file_name"] == "Student Export.csv"
    # The overview offers the template's file, header only, under its exact name.
    assert "Student Export.csv" in client.get(url("district", district)).content.decode()
    blank = client.get(reverse("web:file_template", args=[district.slug, "Student Export.csv"]))
    assert blank.content.decode().startswith("Campus ID;Student ID;First Name;Apellido")


def test_incomplete_mapping_and_bad_names_are_not_saved(district, admin):
    client = signed_in(admin)
    start(client, district)
    stay = client.post(url("template_columns", district), mapping())
    assert stay.status_code == 200 and b"no column is mapped to Last name" in stay.content
    client.post(url("template_columns", district), mapping(**{"col-3": "last_name"}))
    for name, why in (("students", "has no extension"), ("roster.zip", "not a .zip")):
        refused = client.post(
            url("template_check", district), {"file_name": name, "mode": "snapshot"}
        )
        assert refused.status_code == 400 and why in refused.content.decode()
    assert not ImportTemplate.objects.exists()
    assert (
        "Continue with Student Export.csv" in client.get(url("wizard", district)).content.decode()
    )
    for sample in (settings.DATA_DIR / "template-samples").iterdir():
        sample.unlink()  # cleared away: the draft starts again rather than failing
    restart = client.get(url("template_check", district))
    assert restart["Location"] == url("template_sample", district)


def test_a_sample_that_cannot_be_read_says_why(district, admin):
    client = signed_in(admin)
    client.post(url("template_kind", district), {"kind": "schools"})
    empty = SimpleUploadedFile("Schools.csv", b"", content_type="text/csv")
    response = client.post(url("template_sample", district), {"sample": empty})
    assert response.status_code == 400  # Django refuses an empty upload before the engine
    odd = SimpleUploadedFile("Schools.csv", b"\n\n", content_type="text/csv")
    response = client.post(url("template_sample", district), {"sample": odd})
    assert response.status_code == 400 and b"no header row" in response.content
    assert client.get(url("template_columns", district))["Location"] == url(
        "template_sample", district
    )


def test_only_own_district_and_csrf(district, other, admin, operator):
    client = signed_in(admin)
    for name in ("wizard", "template_kind", "template_sample", "template_export"):
        assert client.get(url(name, other)).status_code == 404
    theirs = ImportTemplate.objects.create(
        district=other, file_name="Staff.csv", kind="staff", columns={"id": "id"}
    )
    delete = reverse("web:template_delete", args=[district.slug, theirs.pk])
    assert client.post(delete).status_code == 404
    assert ImportTemplate.objects.filter(pk=theirs.pk).exists()
    # An operator may build templates for any district.
    ops = signed_in(operator)
    start(ops, other, name="Teachers.csv")
    assert ops.get(url("template_columns", other)).status_code == 200
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin)
    assert strict.post(url("template_kind", district), {"kind": "students"}).status_code == 403


def test_operator_sets_a_district_to_its_templates(district, operator):
    from rosterdrop.web.forms import DistrictSettingsForm

    # The whole settings form, as the browser posts it, with only the format changed.
    form = DistrictSettingsForm(instance=district)
    posted = {name: value for name, value in form.initial.items() if value not in (None, False)}
    response = signed_in(operator).post(url("settings", district), {**posted, "format": "custom"})
    assert response.status_code == 302
    assert District.objects.get(pk=district.pk).format == "custom"


def test_with_shared_storage_the_sample_is_kept_in_the_bucket(district, admin, s3):
    """Every front end of a deployment reads the draft's sample from the bucket (the session
    is in the database): nothing of it is left in this front end's data folder."""
    client = signed_in(admin)
    assert "O&#x27;Brien" in start(client, district).content.decode()  # read from the bucket
    [kept] = s3.objects()
    assert kept.startswith("template-samples/") and s3.read(kept) == SAMPLE.encode()
    client.post(url("template_columns", district), mapping(**{"col-3": "last_name"}))
    assert "31/12/2016" in client.get(url("template_check", district)).content.decode()
    start(client, district)  # a new draft replaces the old one and its sample
    [new] = s3.objects()
    assert new != kept
    assert not any((settings.DATA_DIR / key).exists() for key in (kept, new))
    assert not list((settings.DATA_DIR / "tmp").glob("sample-*"))
