from django.core.management.base import BaseCommand, CommandError

from rosterdrop.districts.models import District
from rosterdrop.formats import FORMATS


class Command(BaseCommand):
    help = "Manage district accounts: add, list."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Create a district account.")
        add.add_argument("slug")
        add.add_argument("--name", required=True)
        add.add_argument("--format", required=True, choices=sorted(FORMATS))
        add.add_argument("--removal-threshold", type=float)
        add.add_argument(
            "--upload-quota-bytes", type=int, help="raw uploads it may keep (default: the setting)"
        )
        sub.add_parser("list", help="List district accounts.")

    def handle(self, *args, action, **options):
        if action == "add":
            if District.objects.filter(slug=options["slug"]).exists():
                raise CommandError(f"district {options['slug']!r} already exists")
            district = District.objects.create(
                slug=options["slug"],
                name=options["name"],
                format=options["format"],
                removal_threshold=options["removal_threshold"],
                upload_quota_bytes=options["upload_quota_bytes"],
            )
            self.stdout.write(f"created district {district.slug} ({district.format})")
        else:
            for d in District.objects.all():
                self.stdout.write(f"{d.slug}\t{d.format}\t{d.name}")
