import threading

from django.core.management.base import CommandError

from rosterdrop.cli import ActionCommand
from rosterdrop.districts.management.arguments import district_named
from rosterdrop.feed import webhooks
from rosterdrop.feed.models import Delivery, Subscription
from rosterdrop.roster.models import ENTITIES


class Command(ActionCommand):
    help = (
        "Signed webhooks: add (prints the signing secret), list, remove, log, and send what "
        "is due (`serve` sends on its own; --loop keeps sending)."
    )

    def add_arguments(self, parser):
        sub = self.actions(parser)
        add = sub.add_parser("add", help="Announce a district's applied syncs to a URL.")
        add.add_argument("district")
        add.add_argument("url")
        add.add_argument(
            "--entity",
            action="append",
            default=[],
            choices=ENTITIES,
            help="Only syncs that change this entity (repeat; default: all).",
        )
        listing = sub.add_parser("list", help="Subscriptions.")
        listing.add_argument("--district", default="")
        remove = sub.add_parser("remove", help="Delete a subscription and its deliveries.")
        remove.add_argument("id", type=int)
        deliveries = sub.add_parser("log", help="A subscription's deliveries and attempts.")
        deliveries.add_argument("id", type=int)
        send = sub.add_parser("send", help="Send the deliveries that are due.")
        send.add_argument("--loop", action="store_true", help="Keep sending until stopped.")

    def do_add(self, district: str, url: str, entity: list[str], **options):
        sub = webhooks.subscribe(district_named(district), url, entity)
        self.stdout.write(f"webhook {sub.pk}: {url}")
        self.stdout.write(f"secret {sub.secret}")

    def do_list(self, district: str, **options):
        subs = Subscription.objects.select_related("district")
        if district:
            subs = subs.filter(district__slug=district)
        for s in subs:
            state = "active" if s.active else f"disabled ({s.disabled_reason})"
            kinds = ",".join(s.entities) or "all"
            self.stdout.write(f"{s.pk}  {s.district.slug}  {s.url}  [{kinds}]  {state}")

    def do_remove(self, id: int, **options):
        deleted, _ = Subscription.objects.filter(pk=id).delete()
        if not deleted:
            raise CommandError(f"no webhook {id}")
        self.stdout.write(f"removed webhook {id}")

    def do_log(self, id: int, **options):
        for d in Delivery.objects.filter(subscription_id=id).prefetch_related("log"):
            state = (
                f"delivered {d.delivered_at:%Y-%m-%d %H:%M:%S}"
                if d.delivered_at
                else f"gave up {d.gave_up_at:%Y-%m-%d %H:%M:%S}"
                if d.gave_up_at
                else f"next try {d.next_attempt_at:%Y-%m-%d %H:%M:%S}"
            )
            self.stdout.write(f"{d.message_id}  {state}  attempts {d.attempts}")
            for a in d.log.all():
                self.stdout.write(f"    {a.at:%H:%M:%S}  {a.status or '-'}  {a.error}")

    def do_send(self, loop: bool, **options):
        if loop:
            webhooks.run_forever(threading.Event(), poll=1.0)
            return
        self.stdout.write(f"delivered {webhooks.send_due()}")
