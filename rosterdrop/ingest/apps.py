import pyarrow as pa
from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "rosterdrop.ingest"

    def ready(self):
        # Arrow's default pool (mimalloc) keeps what it frees for later: after the roster's
        # snapshot was read and dropped, about 500 MB stayed resident for the rest of a large
        # import. The system allocator gives large blocks back.
        pa.set_memory_pool(pa.system_memory_pool())
