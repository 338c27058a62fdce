from django.core.management.base import BaseCommand

from rosterdrop.intake import hostkey


class Command(BaseCommand):
    help = "Print the SFTP host key fingerprint (SHA256:...), creating the key on first use."

    def handle(self, *args, **options):
        key = hostkey.load_or_create()
        self.stdout.write(
            f"{hostkey.fingerprint(key)} ({key.get_algorithm()}, {hostkey.host_key_path()})"
        )
