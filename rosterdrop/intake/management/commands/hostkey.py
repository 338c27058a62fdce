from django.core.management.base import BaseCommand

from rosterdrop.intake import hostkey, tlscert


class Command(BaseCommand):
    help = (
        "Print the SFTP host key fingerprint (SHA256:...) and the FTPS certificate's, "
        "creating them on first use."
    )

    def handle(self, *args, **options):
        key = hostkey.load_or_create()
        self.stdout.write(
            f"{hostkey.fingerprint(key)} ({key.get_algorithm()}, {hostkey.host_key_path()})"
        )
        cert = tlscert.load_or_create()
        self.stdout.write(f"FTPS certificate {tlscert.fingerprint(cert)} ({tlscert.paths()[0]})")
