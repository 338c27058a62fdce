from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from rosterdrop.inbox.retention import expired, purge
from rosterdrop.intake import folder


class Command(BaseCommand):
    help = "Delete raw uploads older than ROSTERDROP_RETENTION_DAYS (the worker does it hourly)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="List, delete nothing.")

    def handle(self, *args: str, dry_run: bool, **options: object) -> None:
        now = timezone.now()
        uploads = list(expired(now)) if dry_run else [p.upload for p in purge(now)]
        if not dry_run:
            folder.sweep_old(now)
        verb = "would delete" if dry_run else "deleted"
        for upload in uploads:
            self.stdout.write(f"{verb} {upload.district.slug}/{upload.filename} ({upload.sha256})")
        if not dry_run:
            self.stdout.write("every copy of each, temporary links included; see the audit log")
        days = settings.UPLOAD_RETENTION_DAYS
        self.stdout.write(f"{len(uploads)} upload(s) {verb}; retention {days} days")
