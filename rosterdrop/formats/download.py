"""File templates for districts: a format's header-only CSV files and a README of its rules.

The same files come from `rosterdrop template download` and from the overview page, one by
one or as one zip, the manifest filled in for the district (ALO's account-specific
Manifest.csv).
"""

import io
import zipfile

from rosterdrop.csvsafe import csv_text
from rosterdrop.formats.spec import FileSpec, FormatSpec


def file_templates(
    spec: FormatSpec, district_id: str = "", district_name: str = ""
) -> dict[str, str]:
    """File name -> text: each file's header, the manifest (filled in for a district), README."""
    files = {}
    readme = [f"{spec.title}: file templates", ""]
    if spec.zip_required:
        readme.append("Send all files together in one .zip file, at its top level.")
    if spec.manifest and spec.manifest.columns:
        values = {spec.manifest.account_property: district_id, "District Name": district_name}
        row = [values.get(c, "") for c in spec.manifest.columns]
        files[spec.manifest.name] = csv_text([spec.manifest.columns, row])
        readme.append(f"{spec.manifest.name} is filled in for this account; fill in what is blank.")
    for file in spec.files:
        files[file.name] = header_text(file)
        required = ", ".join(c.name for c in file.columns if c.required) or "none"
        need = "required" if file.required or spec.all_files_required else "optional"
        readme.append(f"- {file.name} ({need}); required columns: {required}")
    files["README.txt"] = "\n".join(readme) + "\n"
    return files


def header_text(file: FileSpec) -> str:
    """One file's header line, in its own delimiter (a custom template's may be ";")."""
    header = [c.name.replace("{n}", "2") for c in file.columns if not (c.delta_only or c.retired)]
    assert file.dialect is not None  # a FormatSpec gives each of its files a dialect
    return csv_text([header], delimiter=file.dialect.delimiters[0])


def templates_zip(spec: FormatSpec, district_id: str = "", district_name: str = "") -> bytes:
    """Every file template of a format in one zip, at its top level."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in file_templates(spec, district_id, district_name).items():
            z.writestr(name, text)
    return buffer.getvalue()
