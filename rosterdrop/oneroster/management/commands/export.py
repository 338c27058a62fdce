from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.districts.management.arguments import district_named
from rosterdrop.ingest.models import Sync
from rosterdrop.oneroster.package import export


class Command(BaseCommand):
    help = (
        "Write a district's roster as a OneRoster 1.2 CSV package (zip): bulk, or with "
        "--since SYNC_ID a delta of what later syncs changed (rows with status)."
    )

    def add_arguments(self, parser):
        parser.add_argument("district")
        parser.add_argument("--output", type=Path, required=True)
        parser.add_argument("--since", type=int, help="A sync of the district.")

    def handle(self, *args, district: str, output: Path, since: int | None, **options):
        found = district_named(district)
        after = None
        if since is not None:
            after = Sync.objects.filter(pk=since, district=found).exclude(finished_at=None).first()
            if after is None:
                raise CommandError(f"no finished sync {since} of {district}")
        written = export(found, output, after)
        kind = f"delta since sync {since}" if after else "bulk"
        files = ", ".join(f"{name} {rows}" for name, rows in written.files.items()) or "no rows"
        self.stdout.write(f"{output}: OneRoster 1.2 {kind}: {files}")
        cursor = written.cursor
        self.stdout.write(f"feed cursor {cursor}: follow the feed with after={cursor}")
