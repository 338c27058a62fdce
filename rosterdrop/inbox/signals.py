"""What the inbox tells the rest: an upload is stored and waits to be imported; retention
deleted an upload's bytes.

Sent by whoever received the file (intake's folder, for SFTP and FTPS); the import worker
listens (intake's AppConfig.ready()), so a transfer front end never imports the worker.
"""

from django.dispatch import Signal

# Sent with `upload=` (an inbox Upload) once it is stored and recorded.
upload_waiting = Signal()

# Sent with `upload=` once retention deleted its bytes: what was kept of them goes too.
upload_purged = Signal()
