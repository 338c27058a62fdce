import json as jsonlib

from django.core.management.base import CommandError

from rosterdrop.cli import ActionCommand
from rosterdrop.ingest import states
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.report import summary
from rosterdrop.ingest.syncs import approve, discard, retry
from rosterdrop.ingest.text import describe


class Command(ActionCommand):
    help = "Syncs: list, show, approve or discard a held one, retry a failed or interrupted one."

    def add_arguments(self, parser):
        sub = self.actions(parser)
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

    def do_list(self, district: str | None = None, json: bool = False, **_):
        syncs = Sync.objects.select_related("district")
        if district:
            syncs = syncs.filter(district__slug=district)
        results = [summary(s) for s in syncs]
        if json:
            self.stdout.write(jsonlib.dumps(results, indent=2))
        for r in [] if json else results:
            counts = ", ".join(
                f"{e} +{c['added']} ~{c['updated']} -{c['removed']}"
                for e, c in r["changes"].items()
            )
            self.stdout.write(f"{r['sync']}\t{r['district']}\t{r['status']}\t{counts}")

    def do_show(self, id: int, json: bool, **_):
        self._print(self._sync(id), json)

    def do_approve(self, id: int, json: bool, **_):
        self._print(self._move(self._held(id), lambda sync: approve(sync, "cli")), json)

    def do_discard(self, id: int, json: bool, **_):
        self._print(self._move(self._held(id), lambda sync: discard(sync, "cli")), json)

    def do_retry(self, id: int, json: bool, **_):
        self._print(self._move(self._sync(id), retry), json)

    def _sync(self, pk: int) -> Sync:
        try:
            return Sync.objects.get(pk=pk)
        except Sync.DoesNotExist:
            raise CommandError(f"no sync {pk}") from None

    def _held(self, pk: int) -> Sync:
        sync = self._sync(pk)
        if sync.status != Sync.Status.HELD:
            raise CommandError(f"sync {sync.pk} is {sync.status}, not held")
        return sync

    def _move(self, sync: Sync, move) -> Sync:
        try:
            return move(sync)
        except states.Conflict:
            raise CommandError(f"sync {sync.pk} was decided by someone else first") from None
        except states.IllegalMove as exc:
            raise CommandError(str(exc)) from None

    def _print(self, sync: Sync, json: bool) -> None:
        result = summary(sync)
        self.stdout.write(jsonlib.dumps(result, indent=2) if json else describe(result))
