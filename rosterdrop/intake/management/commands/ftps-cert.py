from django.core.management.base import BaseCommand

from rosterdrop.intake import tlscert


class Command(BaseCommand):
    help = "Print the FTPS certificate's SHA256 fingerprint, creating it on first use."

    def handle(self, *args, **options):
        cert = tlscert.load_or_create()
        self.stdout.write(f"{tlscert.fingerprint(cert)} ({tlscert.where()})")
