from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "rosterdrop.intake"

    def ready(self) -> None:
        # Here, not at import: the queue imports models, which need the app registry.
        from rosterdrop.inbox.signals import upload_waiting
        from rosterdrop.intake import queue

        upload_waiting.connect(queue.woken, dispatch_uid="rosterdrop.intake.queue")
