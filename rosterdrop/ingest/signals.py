"""What an import tells the rest: a sync's outcome is recorded, and the SIS search index of its
uploads is wanted (ingest.index_builds).

Sent by `syncs`; the job queue or serve's worker thread listens (intake's AppConfig.ready()),
so that the import itself never waits for the index, nor imports the queue.
"""

from django.dispatch import Signal

# Sent with `sync=` (an ingest Sync, not a dry run) once its outcome and its uploads' are
# recorded.
index_wanted = Signal()
