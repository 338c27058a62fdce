import json as jsonlib
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.districts.management.arguments import district_named
from rosterdrop.inbox.store import QuotaExceeded
from rosterdrop.ingest.report import summary
from rosterdrop.ingest.syncs import claimed, import_uploads, receive_path
from rosterdrop.ingest.text import describe


class Command(BaseCommand):
    help = (
        "Import roster files (a zip, a folder or a file) for a district. Exit 1 if it failed. "
        "The files' SIS search index is not built here: `serve` or `rosterdrop worker` builds "
        "it after the import, or `rosterdrop search-index build` now."
    )
    # Django's system checks (0.3 s) run before every command; this one imports on a
    # schedule, where its own time is what counts.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--district", required=True)
        parser.add_argument("--dry-run", action="store_true", help="Plan only; change nothing.")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, path: Path, district: str, dry_run: bool, json: bool, **options):
        if not path.exists():
            raise CommandError(f"{path} does not exist")
        account = district_named(district)
        if not json:
            self.stderr.write(f"Importing {path} for {account.slug}...")
        try:
            uploads = receive_path(account, path)
        except QuotaExceeded as refused:
            raise CommandError(f"{refused}; nothing was kept") from None
        wanted = claimed(account, uploads, dry_run)
        sync = None
        if wanted:
            progress = None if json else self._progress
            sync = import_uploads(account, wanted, dry_run=dry_run, progress=progress)
        if not json and sys.stderr.isatty():
            sys.stderr.write("\n")
        unmatched = [
            {"filename": u.filename, "outcome": u.outcome} for u in uploads if u not in wanted
        ]
        result = summary(sync) if sync else {"status": "unmatched", "issues": []}
        if json:
            self.stdout.write(jsonlib.dumps({**result, "unmatched": unmatched}, indent=2))
        else:
            for upload in unmatched:
                self.stdout.write(f"not imported: {upload['outcome']}")
            self.stdout.write(describe(result) if sync else "Nothing was imported.")
        sys.exit(1 if sync is None or sync.status == "failed" else 0)

    def _progress(self, name: str, rows: int) -> None:
        """A one-line progress display on a terminal (left alone when stderr is a file)."""
        if sys.stderr.isatty():
            sys.stderr.write(f"\r  reading {name}: {rows:,} rows\x1b[K")
            sys.stderr.flush()
