from django.core.management.base import BaseCommand

from rosterdrop.intake import hostkey, tlscert


class Command(BaseCommand):
    help = (
        "Print the SFTP host key fingerprints (SHA256:..., ed25519 first, then ECDSA and RSA) "
        "and the FTPS certificate's, creating them on first use."
    )

    def handle(self, *args, **options):
        for algorithm, printed in hostkey.fingerprints():
            path = hostkey.host_key_path(algorithm)
            self.stdout.write(f"{printed} ({algorithm}, {path})")
        cert = tlscert.load_or_create()
        self.stdout.write(f"FTPS certificate {tlscert.fingerprint(cert)} ({tlscert.paths()[0]})")
