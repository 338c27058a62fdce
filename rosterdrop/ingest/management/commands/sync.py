import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from rosterdrop.ingest import states
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.pipeline import approve, discard, retry
from rosterdrop.ingest.report import summary
from rosterdrop.ingest.text import describe


class Command(BaseCommand):
    help = "Syncs: list, show, approve or discard a held one, retry a failed or interrupted one."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="Syncs, newest first.")
        listing.add_argument("--district")
        listing.add_argument("--json", action="store_true")
        show = sub.add_parser("show")
        show.add_argument("id", type=int)
        show.add_argument("--json", action="store_true")
        for name in ("approve", "discard"):
            decide = sub.add_parser(name, help=f"{name.title()} a held sync.")
            decide.add_argument("id", type=int)
            decide.add_argument("--json", action="store_true")
        again = sub.add_parser(
            "retry", help="Import a failed or interrupted sync's files again, as a new sync."
        )
        again.add_argument("id", type=int)
        again.add_argument("--json", action="store_true")

    def handle(self, *args, action: str, json: bool = False, **options):
        if action == "list":
            syncs = Sync.objects.select_related("district")
            if options.get("district"):
                syncs = syncs.filter(district__slug=options["district"])
            results = [summary(s) for s in syncs]
            if json:
                self.stdout.write(jsonlib.dumps(results, indent=2))
            for r in [] if json else results:
                counts = ", ".join(
                    f"{e} +{c['added']} ~{c['updated']} -{c['removed']}"
                    for e, c in r["changes"].items()
                )
                self.stdout.write(f"{r['sync']}\t{r['district']}\t{r['status']}\t{counts}")
            return
        try:
            sync = Sync.objects.get(pk=options["id"])
        except Sync.DoesNotExist:
            raise CommandError(f"no sync {options['id']}") from None
        try:
            if action in ("approve", "discard"):
                if sync.status != Sync.Status.HELD:
                    raise CommandError(f"sync {sync.pk} is {sync.status}, not held")
                sync = approve(sync, "cli") if action == "approve" else discard(sync, "cli")
            elif action == "retry":
                sync = retry(sync)
        except states.Conflict:
            raise CommandError(f"sync {sync.pk} was decided by someone else first") from None
        except states.IllegalMove as exc:
            raise CommandError(str(exc)) from None
        result = summary(sync)
        self.stdout.write(jsonlib.dumps(result, indent=2) if json else describe(result))
