from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "rosterdrop.intake"

    def ready(self) -> None:
        # Here, not at import: the worker imports models, which need the app registry.
        from rosterdrop.inbox.signals import upload_waiting
        from rosterdrop.intake import worker

        upload_waiting.connect(worker.woken, dispatch_uid="rosterdrop.intake.worker")
