"""What real exports get wrong (issue 14, item 6): accepted with a warning where the meaning
is certain, refused where not, and refused outright for a district that is strict. Every
file here is written by the test itself."""

import shutil
from pathlib import Path

import pytest
from helpers import rows, write

from rosterdrop.formats import FORMATS
from rosterdrop.ingest.engine import Settings, check


def validate(folder: Path, fmt: str = "oneroster-1.1", strict: bool = False) -> dict:
    return check(sorted(folder.iterdir()), Settings.named(fmt, strict=strict)).as_dict()


def fatal(result: dict) -> list[dict]:
    return [i for i in result["issues"] if i["severity"] == "fatal"]


def codes(result: dict) -> dict[str, str]:
    return {i["code"]: i["severity"] for i in result["issues"]}


OPTIONAL = [
    (f.name, c.name)
    for f in FORMATS["oneroster-1.1"].files
    for c in f.columns
    if not c.required and not c.delta_only and not c.numbered
]


@pytest.mark.parametrize(("file", "column"), OPTIONAL)
def test_a_missing_optional_column_never_breaks_anything(school, file, column):
    table = rows(school / file)
    if column not in table[0]:
        pytest.skip(f"{file} of the sample has no {column}")
    at = table[0].index(column)
    write(school / file, [r[:at] + r[at + 1 :] for r in table])
    result = validate(school)
    assert not fatal(result), fatal(result)
    assert result["counts"]["users"] > 0


def test_a_set_without_its_manifest_is_read_as_bulk_with_a_warning(school):
    (school / "manifest.csv").unlink()
    result = validate(school)
    assert codes(result)["manifest_missing"] == "warning" and not fatal(result)
    assert result["counts"]["users"] > 0
    [strict] = fatal(validate(school, strict=True))
    assert strict["code"] == "manifest_missing" and "strict" in strict["message"]


def test_a_set_without_an_optional_file_it_lists_leaves_those_records_alone(school):
    (school / "demographics.csv").unlink()  # the manifest still says file.demographics,bulk
    result = validate(school)
    assert codes(result)["file_not_sent"] == "warning" and not fatal(result)
    assert "demographics" not in result["counts"]
    assert {i["code"] for i in fatal(validate(school, strict=True))} == {"file_not_sent"}


def test_an_unknown_manifest_property_is_told_with_a_did_you_mean(school):
    manifest = (school / "manifest.csv").read_text()
    (school / "manifest.csv").write_text(manifest.replace("file.demographics", "fiel.demographics"))
    result = validate(school)
    [typo] = [i for i in result["issues"] if i["code"] == "manifest_property_unknown"]
    assert typo["severity"] == "warning" and "Did you mean file.demographics?" in typo["message"]
    assert typo["value"] == "fiel.demographics"


def test_an_unknown_column_close_to_a_known_one_is_a_warning_naming_both(school):
    table = rows(school / "users.csv")
    table[0][table[0].index("agentSourcedIds")] = "agentSourceIds"
    write(school / "users.csv", table)
    result = validate(school)
    [near] = [i for i in result["issues"] if i["code"] == "header_near_column"]
    assert near["severity"] == "warning" and near["column"] == "agentSourceIds"
    assert "did you mean 'agentSourcedIds'?" in near["message"]
    assert not fatal(result)


def test_agents_instead_of_agent_sourced_ids_is_no_traceback(school):
    table = rows(school / "users.csv")
    table[0][table[0].index("agentSourcedIds")] = "agents"
    write(school / "users.csv", table)
    result = validate(school)
    assert not fatal(result) and result["counts"]["users"] > 0


@pytest.mark.parametrize("written", ["TRUE", "Yes", "Y", "1", "No", "0"])
def test_booleans_as_exports_write_them_are_read_with_a_warning(school, written):
    table = rows(school / "users.csv")
    at = table[0].index("enabledUser")
    table[1][at] = written
    write(school / "users.csv", table)
    result = validate(school)
    [found] = [i for i in result["issues"] if i["code"] == "boolean_normalised"]
    assert (found["line"], found["value"], found["severity"]) == (2, written, "warning")
    assert not fatal(result)
    assert fatal(validate(school, strict=True))[0]["code"] == "boolean_normalised"


def test_a_strict_district_refuses_what_the_others_accept_with_a_warning(district, school):
    from rosterdrop.ingest.syncs import import_path

    (school / "manifest.csv").unlink()
    district.strict = True
    district.save()
    sync = import_path(district, school)
    assert sync.status == "failed" and "strict" in sync.message
    district.strict = False
    district.save()
    assert import_path(district, school).status == "applied"


def test_a_school_year_left_out_is_derived_from_the_sessions_end_date(district, school):
    from rosterdrop.ingest.syncs import import_path
    from rosterdrop.roster.models import records

    table = rows(school / "academicSessions.csv")
    at, end = table[0].index("schoolYear"), table[0].index("endDate")
    expected = {r[0]: r[end][:4] for r in table[1:]}
    write(school / "academicSessions.csv", [r[:at] + r[at + 1 :] for r in table])
    result = validate(school)
    [derived] = [i for i in result["issues"] if i["code"] == "value_derived"]
    assert derived["severity"] == "warning" and "endDate" in derived["message"]
    assert not fatal(result)
    assert fatal(validate(school, strict=True))[0]["code"] == "value_derived"
    assert import_path(district, school).status == "applied"
    years = {r.sourced_id: r.data["schoolYear"] for r in records(district, "academicSessions")}
    assert years == expected


def test_an_empty_school_year_is_derived_row_by_row(school):
    table = rows(school / "academicSessions.csv")
    table[1][table[0].index("schoolYear")] = ""
    write(school / "academicSessions.csv", table)
    result = validate(school)
    [derived] = [i for i in result["issues"] if i["code"] == "value_derived"]
    assert (derived["line"], derived["severity"]) == (2, "warning")
    assert not [i for i in result["issues"] if i["code"] == "required_missing"]


def test_a_clever_school_number_left_out_is_the_school_id(tmp_path):
    folder = tmp_path / "clever"
    shutil.copytree(Path(__file__).parent / "fixtures" / "clever", folder)
    table = rows(folder / "schools.csv")
    at = table[0].index("School_number")
    write(folder / "schools.csv", [r[:at] + r[at + 1 :] for r in table])
    result = validate(folder, "clever")
    assert not fatal(result), fatal(result)
    assert codes(result)["value_derived"] == "warning"
    assert result["counts"]["orgs"] == 3


def test_trailing_empty_fields_are_ignored_with_a_warning_and_refused_when_strict(school):
    text = (school / "orgs.csv").read_text().splitlines()
    text[1] += ",,"
    (school / "orgs.csv").write_text("\n".join(text) + "\n")
    result = validate(school)
    assert codes(result)["row_trailing_delimiters"] == "warning" and not fatal(result)
    assert fatal(validate(school, strict=True))[0]["code"] == "row_trailing_delimiters"


CERTAIN_DATES = [
    ("8/24/2021", "2021-08-24"),  # US: 24 cannot be a month
    ("24/8/2021", "2021-08-24"),  # UK: 24 cannot be a month
    ("8/8/2021", "2021-08-08"),  # both ways the same day
    ("2021/08/24", "2021-08-24"),
    ("2021-8-24", "2021-08-24"),
    ("8/24/2021 0:00", "2021-08-24"),  # a spreadsheet's midnight
    ("24/08/2021 00:00:00", "2021-08-24"),
    ("2021-08-24T00:00:00Z", "2021-08-24"),
]


@pytest.mark.parametrize(("written", "read"), CERTAIN_DATES)
def test_a_date_whose_meaning_is_certain_is_read_with_a_warning(school, written, read):
    table = rows(school / "academicSessions.csv")
    table[1][table[0].index("startDate")] = written
    write(school / "academicSessions.csv", table)
    result = validate(school)
    [found] = [i for i in result["issues"] if i["code"] == "date_normalised"]
    assert (found["line"], found["value"], found["severity"]) == (2, written, "warning")
    assert f"it was read as {read}" in found["message"] and written in found["message"]
    assert not fatal(result) and not codes(result).get("date_invalid")
    [strict] = fatal(validate(school, strict=True))
    assert strict["code"] == "date_normalised" and "strict" in strict["message"]


def test_a_certain_date_is_stored_as_the_date_it_was_read_as(district, school):
    from rosterdrop.ingest.syncs import import_path
    from rosterdrop.roster.models import records

    table = rows(school / "academicSessions.csv")
    table[1][table[0].index("startDate")] = "24/8/2021 0:00"
    write(school / "academicSessions.csv", table)
    assert import_path(district, school).status == "applied"
    [session] = [r for r in records(district, "academicSessions") if r.sourced_id == table[1][0]]
    assert session.data["startDate"] == "2021-08-24"


def test_a_date_in_a_form_the_format_does_not_declare_is_never_guessed(school):
    table = rows(school / "academicSessions.csv")
    table[1][table[0].index("startDate")] = "04/05/2025"  # April 5 or May 4?
    write(school / "academicSessions.csv", table)
    [bad] = [i for i in validate(school)["issues"] if i["code"] == "date_invalid"]
    assert (bad["line"], bad["value"], bad["severity"]) == (2, "04/05/2025", "error")
    assert "could be 2025-04-05 or 2025-05-04" in bad["message"]


@pytest.mark.parametrize(
    "written",
    ["8/24/21", "13/13/2021", "2/30/2021", "8/24/2021 13:45", "2021/13/01", "8-24/2021", "soon"],
)
def test_what_is_not_certainly_a_date_is_refused_for_its_row(school, written):
    """A two-digit year, no such day, a time of day, mixed separators: not read."""
    table = rows(school / "academicSessions.csv")
    table[1][table[0].index("startDate")] = written
    write(school / "academicSessions.csv", table)
    result = validate(school)
    [bad] = [i for i in result["issues"] if i["code"] == "date_invalid"]
    assert (bad["line"], bad["value"], bad["severity"]) == (2, written, "error")
    assert "date_normalised" not in codes(result)


def test_a_format_that_declares_month_first_never_reads_day_first(tmp_path):
    """Clever writes M/D/YYYY: a day-first value says the file is not what it declares, so
    its other dates cannot be trusted either; the midnight time alone is dropped."""
    folder = tmp_path / "clever"
    shutil.copytree(Path(__file__).parent / "fixtures" / "clever", folder)
    table = rows(folder / "students.csv")
    at = table[0].index("DOB")
    table[1][at], table[2][at] = "20/5/2016", "5/20/2016 12:00:00 AM"
    write(folder / "students.csv", table)
    result = validate(folder, "clever")
    [bad] = [i for i in result["issues"] if i["code"] == "date_invalid"]
    [read] = [i for i in result["issues"] if i["code"] == "date_normalised"]
    assert (bad["line"], read["line"]) == (2, 3)
    assert "it was read as 2016-05-20" in read["message"]
