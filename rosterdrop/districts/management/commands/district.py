from django.core.management.base import CommandError

from rosterdrop.cli import ActionCommand
from rosterdrop.districts.models import District
from rosterdrop.formats import FORMATS


class Command(ActionCommand):
    help = "Manage district accounts: add, list."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        add = sub.add_parser("add", help="Create a district account.")
        add.add_argument("slug")
        add.add_argument("--name", required=True)
        add.add_argument("--format", required=True, choices=sorted(FORMATS))
        add.add_argument("--removal-threshold", type=float)
        add.add_argument(
            "--upload-quota-bytes", type=int, help="raw uploads it may keep (default: the setting)"
        )
        sub.add_parser("list", help="List district accounts.")

    def do_add(
        self,
        slug: str,
        name: str,
        format: str,
        removal_threshold: float | None,
        upload_quota_bytes: int | None,
        **_,
    ):
        if District.objects.filter(slug=slug).exists():
            raise CommandError(f"district {slug!r} already exists")
        district = District.objects.create(
            slug=slug,
            name=name,
            format=format,
            removal_threshold=removal_threshold,
            upload_quota_bytes=upload_quota_bytes,
        )
        self.stdout.write(f"created district {district.slug} ({district.format})")

    def do_list(self, **_):
        for d in District.objects.all():
            self.stdout.write(f"{d.slug}\t{d.format}\t{d.name}")
