import json as jsonlib
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.districts.management.arguments import district_named
from rosterdrop.formats import CUSTOM, FORMATS
from rosterdrop.ingest.district_check import check_for_district
from rosterdrop.ingest.engine import Settings, check
from rosterdrop.ingest.reader import expand
from rosterdrop.ingest.text import describe


class Command(BaseCommand):
    help = (
        "Check roster files without importing them. Exit 1 if fatal. No database is needed "
        "unless --district is given: then the files are checked as that district's upload "
        "would be (its format, custom templates, manifest account, current roster)."
    )
    # Django's system checks (0.3 s) run before every command; this one reads files that
    # may be large, where its own time is what counts.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--format", choices=sorted(FORMATS))
        parser.add_argument("--district", help="Check as this district's upload (database).")
        parser.add_argument(
            "--encoding",
            help="Fallback for non-UTF-8 files (default: the district's, else cp1252).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Refuse what real exports commonly get wrong (a strict district's check).",
        )
        parser.add_argument("--json", action="store_true")

    def handle(
        self, *args, path: Path, format, district, encoding, strict: bool, json: bool, **options
    ):
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        if format == CUSTOM and not district:
            raise CommandError("custom import templates belong to a district: add --district")
        if district:
            checked = check_for_district(
                expand(path),
                district_named(district),
                format_slug=format,
                encoding=encoding,
                strict=strict,
            )
        else:
            settings = Settings.named(format, fallback_encoding=encoding or "cp1252", strict=strict)
            checked = check(expand(path), settings)
        result = checked.as_dict()
        if json:
            self.stdout.write(jsonlib.dumps({**result, "format_reason": checked.reason}, indent=2))
        else:
            self.stdout.write(describe(result, checked.reason))
        sys.exit(1 if checked.fatal else 0)
