from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.backup.archive import restore


class Command(BaseCommand):
    help = "Restore a `rosterdrop backup` folder into the database and data folder (stop serve)."

    def add_arguments(self, parser):
        parser.add_argument("source", type=Path, help="A folder made by `rosterdrop backup`.")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Overwrite a database that already holds districts, and the data folder's "
            "inbox, snapshots and district folders.",
        )

    def handle(self, *args, source: Path, replace: bool, **options):
        try:
            done = restore(source, replace)
        except (FileExistsError, ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"restored the {done.engine} database, {done.uploads} upload(s) and "
            f"{done.files} file(s) from {source}"
        )
