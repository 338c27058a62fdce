from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.backup.archive import backup


class Command(BaseCommand):
    help = "Back up the database and the data folder into a new folder, while the service runs."

    def add_arguments(self, parser):
        parser.add_argument("dest", type=Path, help="A folder that does not exist yet.")

    def handle(self, *args, dest: Path, **options):
        try:
            done = backup(dest)
        except (FileExistsError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"backed up the {done.engine} database, {done.uploads} upload(s) and "
            f"{done.files} file(s) to {dest}"
        )
        for name in done.missing:
            self.stdout.write(f"  gone while copying (retention or a newer snapshot): {name}")
