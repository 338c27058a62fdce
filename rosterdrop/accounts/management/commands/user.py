import secrets
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from rosterdrop.accounts.models import Profile
from rosterdrop.cli import ActionCommand
from rosterdrop.districts.management.arguments import district_named


class Command(ActionCommand):
    help = "Web console users: add an operator or a district admin, list them."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        add = sub.add_parser("add", help="Create a web user (the email is the sign-in name).")
        add.add_argument("email")
        role = add.add_mutually_exclusive_group(required=True)
        role.add_argument("--operator", action="store_true", help="Sees every district.")
        role.add_argument("--district", metavar="SLUG", help="Sees only this district.")
        add.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input instead of generating one.",
        )
        sub.add_parser("list", help="List web users and their roles.")

    def do_list(self, **_):
        for user in get_user_model().objects.order_by("username"):
            profile = Profile.objects.filter(user=user).select_related("district").first()
            role = (
                "operator"
                if user.is_staff
                else (f"district {profile.district.slug}" if profile and profile.district else "-")
            )
            self.stdout.write(f"{user.username}\t{role}")

    @transaction.atomic
    def do_add(
        self, email: str, operator: bool, district: str | None, password_stdin: bool, **_
    ) -> None:
        users = get_user_model()
        if "@" not in email:
            raise CommandError(f"{email!r} is not an email address")
        if users.objects.filter(username=email).exists():
            raise CommandError(f"user {email} already exists")
        found = district_named(district) if district else None
        password = (
            sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(12)
        )
        if len(password) < 8:
            raise CommandError("the password must have at least 8 characters")
        user = users.objects.create_user(email, email, password, is_staff=operator)
        Profile.objects.create(user=user, district=found)
        role = "operator" if operator else f"admin of {district}"
        self.stdout.write(f"created {email} ({role})")
        if not password_stdin:
            self.stdout.write(f"password: {password}  (shown once)")
