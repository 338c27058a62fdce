import json as jsonlib
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.formats import FORMATS
from rosterdrop.ingest.pipeline import check, expand
from rosterdrop.ingest.text import describe


class Command(BaseCommand):
    help = "Check roster files without importing them (no database needed). Exit 1 if fatal."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--format", choices=sorted(FORMATS))
        parser.add_argument("--encoding", default="cp1252", help="Fallback for non-UTF-8 files.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, path: Path, format, encoding, json: bool, **options):
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        checked = check(expand(path), format, encoding)
        result = checked.as_dict()
        if json:
            self.stdout.write(jsonlib.dumps({**result, "format_reason": checked.reason}, indent=2))
        else:
            self.stdout.write(describe(result, checked.reason))
        sys.exit(1 if checked.fatal else 0)
