import os
from typing import Any

from django.apps import AppConfig

from rosterdrop.ingest import memory


class IngestConfig(AppConfig):
    name = "rosterdrop.ingest"

    def ready(self) -> None:
        # Arrow's default pool (mimalloc) keeps what it frees for later: after the roster's
        # snapshot was read and dropped, about 500 MB stayed resident for the rest of a large
        # import. The system allocator gives large blocks back. Arrow reads this when it first
        # allocates: said here, every process's imports use it, and a command that imports
        # nothing does not load Arrow (or the pipeline) at start.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        # And malloc keeps one heap for all threads, set before any of them starts (memory.py).
        memory.one_arena()
        from rosterdrop.inbox.signals import upload_purged

        upload_purged.connect(_forget_issue_rows, dispatch_uid="rosterdrop.ingest.issue_rows")
        upload_purged.connect(_forget_sent_index, dispatch_uid="rosterdrop.ingest.sent_index")


def _forget_issue_rows(sender: object, **kwargs: Any) -> None:
    # Imported when an upload is purged, not at start: issue_rows imports the pipeline.
    from rosterdrop.ingest import issue_rows

    issue_rows.forget(sender, **kwargs)


def _forget_sent_index(sender: object, **kwargs: Any) -> None:
    # Likewise: sent_index imports the pipeline's unpack stage and numpy.
    from rosterdrop.ingest import sent_index

    sent_index.forget(sender, **kwargs)
