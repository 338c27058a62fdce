from typing import Any

from django.apps import AppConfig


class IntakeConfig(AppConfig):
    name = "rosterdrop.intake"

    def ready(self) -> None:
        from rosterdrop.inbox.signals import upload_waiting
        from rosterdrop.ingest.signals import index_wanted

        upload_waiting.connect(_woken, dispatch_uid="rosterdrop.intake.queue")
        index_wanted.connect(_index_wanted, dispatch_uid="rosterdrop.intake.queue.index")


def _woken(sender: object, **kwargs: Any) -> None:
    # Imported when an upload is stored, not at start: the queue imports the pipeline (and
    # procrastinate), which a command that imports nothing does not need to load.
    from rosterdrop.intake import queue

    queue.woken(sender, **kwargs)


def _index_wanted(sender: object, **kwargs: Any) -> None:
    # Likewise: sent by an import, which has loaded the pipeline already.
    from rosterdrop.intake import queue

    queue.index_wanted(sender, **kwargs)
