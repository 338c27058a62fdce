import pyarrow as pa
from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "rosterdrop.ingest"

    def ready(self) -> None:
        # Arrow's default pool (mimalloc) keeps what it frees for later: after the roster's
        # snapshot was read and dropped, about 500 MB stayed resident for the rest of a large
        # import. The system allocator gives large blocks back.
        pa.set_memory_pool(pa.system_memory_pool())
        # Here, not at import: issue_rows imports models, which need the app registry.
        from rosterdrop.inbox.signals import upload_purged
        from rosterdrop.ingest import issue_rows

        upload_purged.connect(issue_rows.forget, dispatch_uid="rosterdrop.ingest.issue_rows")
