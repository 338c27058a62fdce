"""`rosterdrop template add|list|show|test|download|export|import`."""

import json as jsonlib
import sys
from pathlib import Path

from django.core.management.base import CommandError

from rosterdrop.cli import ActionCommand
from rosterdrop.custom.models import ImportTemplate
from rosterdrop.custom.templates import (
    KINDS,
    export_json,
    import_json,
    problems,
    suggest,
    try_sample,
)
from rosterdrop.districts.management.arguments import district_named
from rosterdrop.districts.models import District
from rosterdrop.formats import FORMATS
from rosterdrop.formats.download import file_templates, templates_zip
from rosterdrop.ingest.match import read_header
from rosterdrop.ingest.text import describe
from rosterdrop.ingest.unpack import Member


class Command(ActionCommand):
    help = "Custom import templates of a district, and header-only file templates of a format."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        add = sub.add_parser("add", help="Create a template from a sample file's header.")
        add.add_argument("sample", type=Path)
        add.add_argument("--district", required=True)
        add.add_argument("--kind", required=True, choices=sorted(KINDS))
        add.add_argument("--name", help="Exact file name (default: the sample's name).")
        add.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                         help="Map a column by hand (FIELD empty to ignore it).")  # fmt: skip
        add.add_argument("--delimiter", default=",")
        add.add_argument("--encoding", default="")
        add.add_argument("--date-format", default="%Y-%m-%d")
        add.add_argument("--add-only", action="store_true", help="Never remove records.")
        add.add_argument(
            "--make-schools",
            action="store_true",
            help="Make a school of each school code the file names (no schools file sent).",
        )
        listing = sub.add_parser("list")
        listing.add_argument("--district", required=True)
        show = sub.add_parser("show")
        show.add_argument("file_name")
        show.add_argument("--district", required=True)
        test = sub.add_parser("test", help="Validate a file against its template.")
        test.add_argument("file", type=Path)
        test.add_argument("--district", required=True)
        test.add_argument("--json", action="store_true")
        download = sub.add_parser("download", help="Header-only files of a format, with a README.")
        download.add_argument("format", choices=sorted(f for f in FORMATS if f != "custom"))
        download.add_argument("--district", help="Fill in the district's manifest.")
        download.add_argument("--output", type=Path, help="Default: <format>-templates.zip")
        export = sub.add_parser("export")
        export.add_argument("--district", required=True)
        load = sub.add_parser("import")
        load.add_argument("file", type=Path)
        load.add_argument("--district", required=True)

    def handle(self, *args, **options):
        options["district"] = self._district(options.pop("district", None))
        return super().handle(*args, **options)

    def _district(self, slug: str | None) -> District | None:
        return district_named(slug) if slug else None

    def _template(self, district, file_name: str) -> ImportTemplate:
        try:
            return district.templates.get(file_name=file_name)
        except ImportTemplate.DoesNotExist:
            raise CommandError(
                f"{file_name!r} matches no template of {district.slug} "
                "(file names are exact and case-sensitive)"
            ) from None

    def do_add(self, district, sample: Path, kind: str, **o):
        member = Member(sample.name, 0, lambda: sample.open("rb"), "")
        header = read_header(member, o["delimiter"])
        template = suggest(
            district, o["name"] or sample.name, kind, header, delimiter=o["delimiter"],
            encoding=o["encoding"], date_format=o["date_format"],
            mode="add_only" if o["add_only"] else "snapshot", make_schools=o["make_schools"],
        )  # fmt: skip
        for pair in o["map"]:
            column, _, field = pair.partition("=")
            if column not in template.columns:
                raise CommandError(f"{sample.name} has no column {column!r}")
            template.columns[column] = field
        missing = problems(template)
        if missing:
            raise CommandError("; ".join(missing) + ". Map them with --map COLUMN=FIELD.")
        template.save()
        self.do_show(district, template.file_name)

    def do_list(self, district, **o):
        for t in district.templates.all():
            self.stdout.write(f"{t.file_name}\t{t.kind}\t{t.mode}")

    def do_show(self, district, file_name: str, **o):
        t = self._template(district, file_name)
        self.stdout.write(
            f"{t.file_name} ({t.kind}, {t.mode}, delimiter {t.delimiter!r}, dates {t.date_format})"
        )
        for source, field in t.columns.items():
            self.stdout.write(f"  {source} -> {field or '(ignored)'}")

    def do_test(self, district, file: Path, json: bool, **o):
        template = self._template(district, file.name)
        result = try_sample(template, file, district.fallback_encoding)
        self.stdout.write(jsonlib.dumps(result, indent=2) if json else describe(result))
        sys.exit(1 if any(i["severity"] == "fatal" for i in result["issues"]) else 0)

    def do_download(self, district, format: str, output: Path | None, **o):
        owner = (district.slug, district.name) if district else ("", "")
        output = output or Path(f"{format}-templates.zip")
        output.write_bytes(templates_zip(FORMATS[format], *owner))
        self.stdout.write(f"wrote {output} ({', '.join(file_templates(FORMATS[format], *owner))})")

    def do_export(self, district, **o):
        self.stdout.write(jsonlib.dumps(export_json(district), indent=2, ensure_ascii=False))

    def do_import(self, district, file: Path, **o):
        try:
            saved = import_json(district, jsonlib.loads(file.read_text(encoding="utf-8")))
        except (ValueError, KeyError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"imported {len(saved)} templates into {district.slug}")
