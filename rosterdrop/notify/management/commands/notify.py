from rosterdrop.cli import ActionCommand
from rosterdrop.notify import send_pending
from rosterdrop.notify.models import OutboxMail


class Command(ActionCommand):
    help = "Notification mails: send what is due, or list the outbox."

    def add_arguments(self, parser):
        sub = self.actions(parser)
        sub.add_parser("send", help="Send the mails that are due (for cron, if no worker runs).")
        sub.add_parser("outbox", help="List mails not sent yet, with their last error.")

    def do_send(self, **options):
        self.stdout.write(f"sent {send_pending()}")

    def do_outbox(self, **options):
        for mail in OutboxMail.objects.filter(sent_at__isnull=True):
            self.stdout.write(
                f"{mail.pk}\t{mail.to}\t{mail.attempts}\t{mail.subject}\t{mail.last_error}"
            )
