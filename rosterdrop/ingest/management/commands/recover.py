from django.core.management.base import BaseCommand

from rosterdrop.ingest.recovery import recover


class Command(BaseCommand):
    help = (
        "Settle what a crash left: syncs of dead processes (interrupted and imported again "
        "once, or an approval held again) and their temporary files. `serve` does it at start."
    )

    def handle(self, *args, **options):
        done = recover()
        self.stdout.write(
            f"interrupted syncs: {done.interrupted or 'none'}; imported again as: "
            f"{done.reimported or 'none'}; approvals held again: {done.held_again or 'none'}; "
            f"uploads settled: {done.settled_uploads}; web/CLI uploads whose import never "
            f"began, failed: {done.never_started}; temporary files removed: "
            f"{len(done.removed)}"
        )
