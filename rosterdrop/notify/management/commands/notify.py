from django.core.management.base import BaseCommand

from rosterdrop.notify import send_pending
from rosterdrop.notify.models import OutboxMail


class Command(BaseCommand):
    help = "Notification mails: send what is due, or list the outbox."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("send", help="Send the mails that are due (for cron, if no worker runs).")
        sub.add_parser("outbox", help="List mails not sent yet, with their last error.")

    def handle(self, *args, action: str, **options):
        if action == "send":
            self.stdout.write(f"sent {send_pending()}")
            return
        for mail in OutboxMail.objects.filter(sent_at__isnull=True):
            self.stdout.write(
                f"{mail.pk}\t{mail.to}\t{mail.attempts}\t{mail.subject}\t{mail.last_error}"
            )
