"""Custom import templates (Istation style) as format specs: the same engine runs them.

A template belongs to one district, names one exact file name, says what kind of data the
file holds and maps each source column to a template field (or ignores it). At import time
`district_format` turns the district's templates into a FormatSpec; a file that matches no
template is reported by the engine like any unknown file.

The API the web console's wizard uses:

    KINDS, KIND_TITLES, feeds("students")                           # what a file may hold
    sample = read_sample(Path("sample.csv"))                        # header, first rows, delimiter
    draft = suggest(district, "Students.csv", "students", sample.header)  # unsaved, mapped by name
    checked = try_sample(draft, Path("sample.csv"))                 # rosterdrop validate's shape
    save_template(draft)                                            # complete, or ValueError
    export_json(district) / import_json(district, data)             # move templates around
"""

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from rosterdrop.custom.models import ImportTemplate
from rosterdrop.formats.common import enrollment, person
from rosterdrop.formats.spec import Column, Dialect, FileSpec, FormatSpec, Mode, Output, Type
from rosterdrop.ingest.columns import LINE
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import FATAL, Failure, Finding, FindingLog
from rosterdrop.ingest.keys import check_keys
from rosterdrop.ingest.outcome import Checked
from rosterdrop.ingest.read import frames, read_table
from rosterdrop.ingest.reader import Reader
from rosterdrop.ingest.unpack import Member

ID, SCHOOL = "id", "school_id"


@dataclass(frozen=True)
class Field:
    """A template field: a name the wizard offers, its type and whether it is required."""

    name: str
    label: str
    type: Type = Type.STRING
    required: bool = False
    aliases: tuple[str, ...] = ()  # header names suggested for it


def _f(name: str, label: str, *aliases: str, **kw) -> Field:
    return Field(name, label, aliases=aliases, **kw)


PERSON = (
    _f(ID, "ID", "sis id", "student id", "teacher id", "staff id", "person id", required=True),
    _f(SCHOOL, "School ID", "school", "campus id", "campus_id", "school sis id", required=True),
    _f("first_name", "First name", "fname", "given name", "givenname", required=True),
    _f("last_name", "Last name", "lname", "family name", "surname", required=True),
    _f("middle_name", "Middle name", "mi", "middle initial"),
    _f("email", "Email", "email address", "e-mail", type=Type.EMAIL),
    _f("username", "Username", "login", "login id", "login_id"),
    _f("number", "Local number", "student number", "teacher number"),
)
KINDS: dict[str, tuple[Field, ...]] = {
    "schools": (
        _f(ID, "School ID", "school id", "campus id", "sis id", required=True),
        _f("name", "Name", "school name", required=True),
        _f("number", "School number"),
    ),
    "students": PERSON
    + (_f("grade", "Grade", "grade level"), _f("birth_date", "Birth date", "dob", type=Type.DATE)),
    "teachers": PERSON,
    "staff": PERSON,
    "sections": (
        _f(ID, "Class ID", "section id", "class id", required=True),
        _f(SCHOOL, "School ID", "school", "campus id", required=True),
        _f("name", "Class name", "section name", "class name", "title", required=True),
        _f("teacher_id", "Teacher ID", "tid", "teacher"),
        _f("period", "Period"),
    ),
    "enrollments": (
        _f("class_id", "Class ID", "section id", "section", required=True),
        _f("student_id", "Student ID", "sis id", required=True),
    ),
    "guardians": (
        _f(ID, "Guardian ID", "parent id", "contact id", required=True),
        _f("student_id", "Student ID", required=True),
        _f("first_name", "First name", "fname"),
        _f("last_name", "Last name", "lname"),
        _f("email", "Email", type=Type.EMAIL),
        _f("phone", "Phone", "mobile"),
    ),
}
KIND_TITLES: dict[str, str] = {
    "schools": "Schools",
    "students": "Students, with their school (and grade, birth date)",
    "teachers": "Teachers, with their school",
    "staff": "Other staff (administrators), with their school",
    "sections": "Classes (sections), with their school and teacher",
    "enrollments": "Students in classes",
    "guardians": "Parents and guardians of students",
}
NAME_FIELDS = {
    "givenName": "first_name",
    "familyName": "last_name",
    "middleName": "middle_name",
    "email": "email",
    "username": "username",
    "identifier": "number",
}


def _outputs(kind: str, src: dict[str, str]) -> tuple[Output, ...]:
    """What a kind of file feeds; `src` maps template fields to the file's column names."""
    names = {canon: src[f] for canon, f in NAME_FIELDS.items() if f in src}
    match kind:
        case "schools":
            fields = {
                "name": src["name"],
                **({"identifier": src["number"]} if "number" in src else {}),
            }
            return (Output("orgs", fields, key=(src[ID],), constants={"type": "school"}),)
        case "students" | "teachers" | "staff":
            role = {"students": "student", "teachers": "teacher", "staff": "administrator"}[kind]
            extra = {"grades": src["grade"]} if "grade" in src else {}
            outputs = person(src[ID], {**names, **extra}, role, school=src[SCHOOL], repeated=True)
            if "birth_date" in src:
                outputs += (
                    Output("demographics", {"birthDate": src["birth_date"]}, key=(src[ID],),
                           where={src["birth_date"]: True}, keep_extra=False, deduplicate=True),
                )  # fmt: skip
            return outputs
        case "sections":
            fields = {"title": src["name"], "schoolSourcedId": src[SCHOOL]}
            if "period" in src:
                fields["periods"] = src["period"]
            outputs = (
                Output("classes", fields, key=(src[ID],), constants={"classType": "scheduled"}),
            )
            if "teacher_id" in src:
                outputs += (
                    enrollment(src[ID], src["teacher_id"], "teacher", src[SCHOOL],
                               primary="true", where={src["teacher_id"]: True}),
                )  # fmt: skip
            return outputs
        case "enrollments":
            return (enrollment(src["class_id"], src["student_id"], "student"),)
        case "guardians":
            return (
                Output("users", {**names, **({"phone": src["phone"]} if "phone" in src else {})},
                       key=(src[ID],), constants={"enabledUser": "true"}, deduplicate=True),
                Output("agents", {"userSourcedId": src["student_id"], "agentSourcedId": src[ID]},
                       key=(src["student_id"], src[ID]), keep_extra=False),
            )  # fmt: skip
    raise ValueError(f"unknown template kind {kind!r}; known kinds: {', '.join(KINDS)}")


def feeds(kind: str) -> tuple[str, ...]:
    """The canonical entities a kind of file fills when every field is mapped (users, roles...)."""
    every = {f.name: f.name for f in KINDS[kind]}
    return tuple(dict.fromkeys(o.entity for o in _outputs(kind, every)))


def _schools_from_codes(column: str) -> Output:
    """A school for each code a file names, named by its code (the make_schools option)."""
    return Output(
        "orgs",
        {"name": column},
        key=(column,),
        constants={"type": "school"},
        keep_extra=False,
        deduplicate=True,
    )


def file_spec(template) -> FileSpec:
    """A template as the engine's FileSpec: its columns typed by the fields they map to."""
    fields = {f.name: f for f in KINDS[template.kind]}
    src = {target: source for source, target in template.columns.items() if target}
    columns = tuple(
        Column(source, fields[target].type, required=fields[target].required)
        if target
        else Column(source, secret=True)  # ignored: read, never kept
        for source, target in template.columns.items()
    )
    date_formats = tuple(dict.fromkeys(("%Y-%m-%d", template.date_format)))
    outputs = _outputs(template.kind, src)
    if template.make_schools and SCHOOL in src:
        outputs += (_schools_from_codes(src[SCHOOL]),)
    return FileSpec(
        template.file_name,
        columns,
        outputs,
        mode=Mode.BULK if template.mode == ImportTemplate.Mode.SNAPSHOT else Mode.DELTA,
        dialect=Dialect(
            delimiters=template.delimiter,
            date_formats=date_formats,
            case_insensitive_enums=True,
            encoding=template.encoding,
        ),
    )


def name_problems(file_name: str) -> list[str]:
    """Why a file name cannot name a template: it is matched exactly, as a CSV file."""
    if not file_name.strip():
        return ["the file name is empty"]
    if file_name != file_name.strip() or "/" in file_name or "\\" in file_name:
        return [f"{file_name!r} is not a plain file name (no folders, no spaces around it)"]
    if "." not in file_name.strip("."):
        return [f"{file_name!r} has no extension; give the exact name, e.g. Students.csv"]
    if file_name.lower().endswith(".zip"):
        return ["a template reads one CSV file, not a .zip (the files inside it are matched)"]
    return []


def problems(template) -> list[str]:
    """What keeps a template from working, in words (empty when it is complete)."""
    return name_problems(template.file_name) + mapping_problems(template)


def mapping_problems(template) -> list[str]:
    """What its column mapping lacks: required fields unmapped, unknown or doubled fields."""
    kind = KINDS.get(template.kind)
    if kind is None:
        return [f"unknown kind {template.kind!r}; choose one of {', '.join(KINDS)}"]
    mapped = [t for t in template.columns.values() if t]
    out = [
        f"no column is mapped to {f.label} ({f.name})"
        for f in kind
        if f.required and f.name not in mapped
    ]
    out += [
        f"{t!r} is not a field of {template.kind}"
        for t in mapped
        if t not in {f.name for f in kind}
    ]
    out += [f"{t!r} is mapped twice" for t in sorted(set(mapped)) if mapped.count(t) > 1]
    return out


def as_format(templates, title: str) -> FormatSpec:
    """Templates as one format; each file is optional, and its own template's mode applies."""
    add_file: dict[str, str] = {}
    for kind in KINDS:
        for entity in feeds(kind):
            add_file.setdefault(
                entity,
                f"Add an import template of the kind {kind} (Import templates in the console, "
                f"or `rosterdrop template add --kind {kind}`) and send its file with the others.",
            )
    add_file["orgs"] += (
        " Or let the template that names them make a school of each code "
        "(`rosterdrop template add ... --make-schools`)."
    )
    return FormatSpec(
        slug="custom",
        title=title,
        files=tuple(file_spec(t) for t in templates),
        header_order=False,
        default_mode=Mode.BULK,
        detectable=False,
        add_file=add_file,
    )


def district_format(slug: str) -> FormatSpec:
    """The spec of a district whose format is `custom`: its templates, read from the database."""
    templates = [t for t in ImportTemplate.objects.filter(district__slug=slug) if not problems(t)]
    return as_format(templates, f"the import templates of {slug}")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def suggested_columns(kind: str, header: list[str]) -> dict[str, str]:
    """Each source column -> the field its name suggests, or "" (to map by hand or ignore)."""
    fields = KINDS[kind]
    taken: set[str] = set()
    out = {}
    for source in header:
        name = _norm(source)
        match = next(
            (
                f.name
                for f in fields
                if f.name not in taken
                and name in {_norm(f.name), _norm(f.label), *map(_norm, f.aliases)}
            ),
            "",
        )
        taken.add(match)
        out[source] = match
    return out


DELIMITERS = ",;\t|"


@dataclass
class Sample:
    """The start of a sample file as the engine reads it: enough to map its columns by eye."""

    header: list[str]
    rows: list[list[str]]
    delimiter: str
    encoding: str


def read_sample(path: Path, delimiter: str = "", fallback_encoding: str = "", rows: int = 3):
    """A sample's header and first rows, by the engine's own decode and read stages.

    `delimiter` blank: the first of comma, semicolon, tab, pipe found in the header line.
    Raises Failure (its finding says why) when the file cannot be read at all.
    """
    with path.open("rb") as stream:
        decoded = decode(stream, path.name, fallback_encoding)
        first = next(decoded.chunks, b"")
        line = first.partition(b"\n")[0]
        delimiter = delimiter or next((d for d in DELIMITERS if d.encode() in line), ",")
        table = read_table(path.name, itertools.chain([first], decoded.chunks), delimiter)
        batch = next(frames(table), None)
        head = [] if batch is None else batch.drop(LINE).head(rows).rows()
    return Sample(table.header, [list(r) for r in head], delimiter, decoded.encoding)


def suggest(district, file_name: str, kind: str, header: list[str], **settings):
    """An unsaved template for a sample's header, its columns mapped by name where obvious."""
    return ImportTemplate(
        district=district,
        file_name=file_name,
        kind=kind,
        columns=suggested_columns(kind, header),
        **settings,
    )


def try_sample(template, path: Path, fallback_encoding: str = "cp1252") -> dict:
    """Validate a sample file against a (possibly unsaved) template: the validate JSON shape."""
    log = FindingLog()
    reason = f"the template for {template.file_name}"
    missing = problems(template)
    if missing:
        log.add(Finding(FATAL, "template_incomplete", "The template is not complete: "
                        + "; ".join(missing) + ".", template.file_name))  # fmt: skip
        return Checked("custom", reason, log=log).as_dict()
    spec = as_format([template], "this import template")
    file = spec.files[0]
    member = Member(template.file_name, path.stat().st_size, lambda: path.open("rb"), "")
    # The engine's own reader, on one file under a spec not yet in the database.
    reader = Reader(log, fallback_encoding)
    try:
        reader.read_file(spec, file, member, file.mode)
    except Failure as failure:
        log.add(failure.finding)
        return Checked("custom", reason, tuple(reader.files), log=log).as_dict()
    # One file alone: check references among its own records only (its schools come later).
    sent = set(reader.entities)
    refs = {e: tuple(r for r in rs if r.target in sent) for e, rs in spec.references.items()}
    accepted = check_keys(reader.entities, {}, log, refs)
    counts = {e: f.height for e, f in accepted.items()}
    return Checked("custom", reason, tuple(reader.files), counts, log).as_dict()


EXPORTED = (
    "file_name", "kind", "columns", "delimiter", "encoding", "date_format", "mode", "make_schools"
)  # fmt: skip


def export_json(district) -> dict:
    """A district's templates as plain JSON, to keep or to load into another account."""
    return {
        "rosterdrop_templates": 1,
        "templates": [{k: getattr(t, k) for k in EXPORTED} for t in district.templates.all()],
    }


def save_template(template) -> ImportTemplate:
    """Save a complete template, replacing the district's template of the same file name.

    Raises ValueError saying what is missing, so nothing half-made is ever stored.
    """
    missing = problems(template)
    if missing:
        raise ValueError(f"{template.file_name}: " + "; ".join(missing))
    values = {k: getattr(template, k) for k in EXPORTED}
    return ImportTemplate.objects.update_or_create(
        district=template.district, file_name=template.file_name, defaults=values
    )[0]


@transaction.atomic
def import_json(district, data: dict) -> list:
    """Create or replace the district's templates from `export_json` output (all or none)."""
    if data.get("rosterdrop_templates") != 1:
        raise ValueError("not a rosterdrop templates file (rosterdrop_templates: 1 is missing)")
    return [
        save_template(
            ImportTemplate(district=district, **{k: item[k] for k in EXPORTED if k in item})
        )
        for item in data["templates"]
    ]
