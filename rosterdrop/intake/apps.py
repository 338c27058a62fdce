from typing import Any

from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "rosterdrop.intake"

    def ready(self) -> None:
        from rosterdrop.inbox.signals import upload_waiting

        upload_waiting.connect(_woken, dispatch_uid="rosterdrop.intake.queue")


def _woken(sender: object, **kwargs: Any) -> None:
    # Imported when an upload is stored, not at start: the queue imports the pipeline (and
    # procrastinate), which a command that imports nothing does not need to load.
    from rosterdrop.intake import queue

    queue.woken(sender, **kwargs)
