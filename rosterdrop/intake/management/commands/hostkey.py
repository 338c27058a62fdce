from django.core.management.base import BaseCommand

from rosterdrop.intake import hostkey, tlscert


class Command(BaseCommand):
    help = (
        "Print the SFTP host key fingerprints (SHA256:..., ed25519 first, then ECDSA and RSA) "
        "and the FTPS certificate's, creating them on first use; every front end on the same "
        "database shows the same."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--public",
            action="store_true",
            help="Print the host keys as OpenSSH public key lines (for a known_hosts file).",
        )

    def handle(self, *args, public: bool, **options):
        if public:
            self.stdout.write("\n".join(hostkey.public_keys()))
            return
        for algorithm, printed in hostkey.fingerprints():
            self.stdout.write(f"{printed} ({algorithm}, database)")
        cert = tlscert.load_or_create()
        self.stdout.write(f"FTPS certificate {tlscert.fingerprint(cert)} ({tlscert.where()})")
