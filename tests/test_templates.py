"""Custom import templates: made from a sample, stored, run by the same engine, moved as JSON."""

import io
import json
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.db.models.signals import post_save

from rosterdrop.custom.models import ImportTemplate
from rosterdrop.custom.templates import export_json, import_json, suggest, try_sample
from rosterdrop.districts.models import District
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)

SCHOOLS = "Campus ID;School Name\n001;Escuela José Martí\n002;O'Connor Middle\n"
STUDENTS = (
    "campus_id;id;fname;lname;mi;grade;DOB;Notes\n"
    "001;000123;Zoë;O'Brien;A;3;4/2/2017;likes maps\n"
    "001;000124;José;Muñoz;;3;12/31/2016;\n"
    "002;000200;Siobhán;D'Angelo;;7;1/15/2013;\n"
)


@pytest.fixture
def custom(db) -> District:
    return District.objects.create(slug="istown", name="Istown ISD", format="custom")


def header(text: str) -> list[str]:
    return text.splitlines()[0].split(";")


def save_templates(district: District) -> None:
    schools = suggest(district, "Campuses.csv", "schools", header(SCHOOLS), delimiter=";")
    schools.save()
    students = suggest(
        district,
        "Students Export.csv",
        "students",
        header(STUDENTS),
        delimiter=";",
        date_format="%m/%d/%Y",
    )
    students.columns["mi"] = "middle_name"
    students.save()


def test_suggestions_map_columns_by_name(custom):
    draft = suggest(custom, "Students Export.csv", "students", header(STUDENTS))
    assert draft.columns == {
        "campus_id": "school_id", "id": "id", "fname": "first_name", "lname": "last_name",
        "mi": "middle_name", "grade": "grade", "DOB": "birth_date", "Notes": "",
    }  # fmt: skip
    assert draft.pk is None  # nothing saved until the wizard says so


def test_a_sample_is_validated_before_saving(custom, tmp_path):
    sample = tmp_path / "Students Export.csv"
    sample.write_text(STUDENTS.replace("4/2/2017", "2017-02-31"), encoding="utf-8")
    draft = suggest(
        custom, sample.name, "students", header(STUDENTS), delimiter=";", date_format="%m/%d/%Y"
    )
    result = try_sample(draft, sample)
    [issue] = result["issues"]
    assert (issue["code"], issue["line"], issue["column"]) == ("date_invalid", 2, "DOB")
    assert result["counts"]["users"] == 3


def test_templates_import_through_the_engine(custom, tmp_path):
    save_templates(custom)
    (tmp_path / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
    (tmp_path / "Students Export.csv").write_text(STUDENTS, encoding="utf-8")
    sync = import_path(custom, tmp_path)
    assert sync.status == "applied", sync.message
    assert sync.changes["users"]["added"] == 3 and sync.changes["orgs"]["added"] == 2
    zoe = records(custom, "users").get(sourced_id="000123")
    assert (zoe.data["givenName"], zoe.data["familyName"]) == ("Zoë", "O'Brien")
    assert "metadata" not in zoe.data  # "Notes" is ignored: not kept
    birth = records(custom, "demographics").get(sourced_id="000123")
    assert birth.data["birthDate"] == "2017-04-02"


def test_an_import_reads_its_files_with_the_one_format_its_digest_names(custom, tmp_path):
    """The district's format is resolved once per import: a template saved as an import
    starts cannot have the files read one way while the import is recorded as another (its
    digest then passes off later files read with the other template as already imported)."""
    save_templates(custom)
    (tmp_path / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
    (tmp_path / "Students Export.csv").write_text(STUDENTS, encoding="utf-8")
    students = ImportTemplate.objects.filter(district=custom, file_name="Students Export.csv")
    as_saved = students.get().columns
    swapped = {**as_saved, "fname": "last_name", "lname": "first_name"}

    def save_meanwhile(sender, created: bool, **kwargs) -> None:
        if created:
            students.update(columns=swapped)

    post_save.connect(save_meanwhile, sender=Sync)
    try:
        assert import_path(custom, tmp_path).status == "applied"
    finally:
        post_save.disconnect(save_meanwhile, sender=Sync)
    students.update(columns=as_saved)
    import_path(custom, tmp_path)  # the same files, under the template as first saved
    zoe = records(custom, "users").get(sourced_id="000123")
    assert (zoe.data["givenName"], zoe.data["familyName"]) == ("Zoë", "O'Brien")


def test_a_file_matching_no_template_is_reported(custom, tmp_path):
    save_templates(custom)
    (tmp_path / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
    (tmp_path / "students export.csv").write_text(STUDENTS, encoding="utf-8")
    (tmp_path / "grades.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    sync = import_path(custom, tmp_path)
    # Loose files no template claims are unmatched, as over SFTP; Campuses.csv is imported.
    assert list(sync.uploads.values_list("filename", flat=True)) == ["Campuses.csv"]
    unmatched = dict(custom.uploads.filter(status="unmatched").values_list("filename", "outcome"))
    assert set(unmatched) == {"students export.csv", "grades.csv"}
    assert "Did you mean Students Export.csv?" in unmatched["students export.csv"]
    assert "import templates of istown" in unmatched["grades.csv"]


def test_add_only_template_never_removes(custom, tmp_path):
    save_templates(custom)
    ImportTemplate.objects.filter(file_name="Students Export.csv").update(mode="add_only")
    (tmp_path / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
    path = tmp_path / "Students Export.csv"
    path.write_text(STUDENTS, encoding="utf-8")
    import_path(custom, tmp_path)
    path.write_text("\n".join(STUDENTS.splitlines()[:2]) + "\n", encoding="utf-8")
    again = import_path(custom, tmp_path)
    assert again.changes["users"]["removed"] == 0
    assert records(custom, "users").filter(status="active").count() == 3


def test_templates_round_trip_as_json(custom):
    save_templates(custom)
    data = json.loads(json.dumps(export_json(custom)))
    other = District.objects.create(slug="other", name="Other", format="custom")
    import_json(other, data)
    assert export_json(other) == data
    with pytest.raises(ValueError, match="not a rosterdrop templates file"):
        import_json(other, {"templates": []})


def test_cli_add_list_show_test(custom, tmp_path, capsys):
    sample = tmp_path / "Students Export.csv"
    sample.write_text(STUDENTS, encoding="utf-8")
    call_command(
        "template", "add", str(sample), "--district", "istown", "--kind", "students",
        "--delimiter", ";", "--date-format", "%m/%d/%Y", "--map", "Notes=",
    )  # fmt: skip
    call_command("template", "list", "--district", "istown")
    assert "Students Export.csv\tstudents\tsnapshot" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        call_command("template", "test", str(sample), "--district", "istown", "--json")
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["counts"]["users"] == 3


def test_download_fills_in_the_alo_manifest(custom, tmp_path):
    out = tmp_path / "alo.zip"
    call_command("template", "download", "alo", "--district", "istown", "--output", str(out))
    with zipfile.ZipFile(io.BytesIO(out.read_bytes())) as z:
        names = set(z.namelist())
        manifest = z.read("Manifest.csv").decode()
        readme = z.read("README.txt").decode()
    assert {"Manifest.csv", "Schools.csv", "StaffEnrollments.csv", "README.txt"} <= names
    assert manifest.splitlines()[1].startswith("istown,Istown ISD,")
    assert "Students.csv (required); required columns: ID, First Name" in readme


def _validate(capsys, *args) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as done:
        call_command("validate", *map(str, args), "--json")
    return done.value.code, json.loads(capsys.readouterr().out)


def test_validate_with_district_uses_its_templates_and_account(custom, tmp_path, capsys):
    from test_formats_vendors import ALO

    save_templates(custom)
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "Campuses.csv").write_text(SCHOOLS, encoding="utf-8")
    (folder / "Students Export.csv").write_text(STUDENTS, encoding="utf-8")
    code, result = _validate(capsys, folder, "--district", "istown")
    assert code == 0 and result["format"] == "custom" and result["issues"] == []
    assert (result["counts"]["orgs"], result["counts"]["users"]) == (2, 3)
    # The ALO manifest names springfield: refused for istown, as its import would be.
    code, result = _validate(capsys, ALO, "--district", "istown", "--format", "alo")
    assert code == 1 and result["issues"][0]["code"] == "manifest_account_mismatch"
    # Without --district nothing is read from the database; custom needs a district.
    code, result = _validate(capsys, ALO)
    assert code == 0 and result["format"] == "alo"
    with pytest.raises(CommandError, match="--district"):
        call_command("validate", str(folder), "--format", "custom")
