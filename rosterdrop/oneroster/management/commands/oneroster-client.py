from django.core.management.base import CommandError

from rosterdrop.cli import ActionCommand
from rosterdrop.districts.management.arguments import district_named
from rosterdrop.oneroster.clients import create_client, revoke_client
from rosterdrop.oneroster.models import SCOPES, Client


class Command(ActionCommand):
    help = "OAuth 2.0 clients of the OneRoster service: add (prints the secret once), list, revoke."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        add = sub.add_parser("add", help="Create a client for a vendor app and one district.")
        add.add_argument("name")
        add.add_argument("--district", required=True)
        add.add_argument(
            "--scope",
            action="append",
            default=[],
            choices=SCOPES,
            help="A scope it may ask for (repeat; default: all three).",
        )
        listing = sub.add_parser("list", help="List clients.")
        listing.add_argument("--district", default="")
        revoke = sub.add_parser("revoke", help="Revoke a client and every token it holds.")
        revoke.add_argument("client_id")

    def do_add(self, name: str, district: str, scope: list[str], **options):
        client, secret = create_client(name, district_named(district), scope)
        self.stdout.write(f"client_id     {client.client_id}")
        self.stdout.write(f"client_secret {secret}")
        self.stdout.write(f"scopes        {client.scopes}")
        self.stdout.write("The secret is shown only now.")

    def do_list(self, district: str, **options):
        clients = Client.objects.select_related("district")
        if district:
            clients = clients.filter(district__slug=district)
        for c in clients:
            state = f"revoked {c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "active"
            self.stdout.write(f"{c.client_id}  {c.district.slug}  {c.name}  [{c.scopes}]  {state}")

    def do_revoke(self, client_id: str, **options):
        client = Client.objects.filter(client_id=client_id).first()
        if client is None:
            raise CommandError(f"no client {client_id}")
        revoke_client(client)
        self.stdout.write(f"revoked {client_id}")
