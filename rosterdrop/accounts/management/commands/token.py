from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rosterdrop.accounts.models import ApiToken


class Command(BaseCommand):
    help = "API tokens: create one for a user (printed once; send as 'Authorization: Bearer')."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token for a web user.")
        create.add_argument("email")

    def handle(self, *args, action: str, email: str, **options):
        user = get_user_model().objects.filter(username=email, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user {email}")
        self.stdout.write(ApiToken.issue(user))
