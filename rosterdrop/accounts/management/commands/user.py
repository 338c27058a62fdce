import secrets
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from rosterdrop.accounts.models import Profile
from rosterdrop.districts.models import District


class Command(BaseCommand):
    help = "Web console users: add an operator or a district admin, list them."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
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

    def handle(self, *args, action: str, **options):
        if action == "list":
            for user in get_user_model().objects.order_by("username"):
                profile = Profile.objects.filter(user=user).select_related("district").first()
                role = (
                    "operator"
                    if user.is_staff
                    else (
                        f"district {profile.district.slug}" if profile and profile.district else "-"
                    )
                )
                self.stdout.write(f"{user.username}\t{role}")
            return
        self._add(
            options["email"], options["operator"], options["district"], options["password_stdin"]
        )

    @transaction.atomic
    def _add(self, email: str, operator: bool, slug: str | None, from_stdin: bool) -> None:
        users = get_user_model()
        if "@" not in email:
            raise CommandError(f"{email!r} is not an email address")
        if users.objects.filter(username=email).exists():
            raise CommandError(f"user {email} already exists")
        district = None
        if slug:
            district = District.objects.filter(slug=slug).first()
            if district is None:
                raise CommandError(f"no district {slug!r}")
        password = sys.stdin.readline().rstrip("\n") if from_stdin else secrets.token_urlsafe(12)
        if len(password) < 8:
            raise CommandError("the password must have at least 8 characters")
        user = users.objects.create_user(email, email, password, is_staff=operator)
        Profile.objects.create(user=user, district=district)
        role = "operator" if operator else f"admin of {district.slug}"
        self.stdout.write(f"created {email} ({role})")
        if not from_stdin:
            self.stdout.write(f"password: {password}  (shown once)")
