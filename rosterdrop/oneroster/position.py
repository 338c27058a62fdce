"""Where in the change feed a read of the roster stands, so that a consumer that starts from
a full read (the CSV export, or the REST collections) can follow the feed from there without
missing or repeating a change.

A read runs in one transaction that sees one committed state of the roster, and the feed's
counter is read in it: every change of the events up to that number is in what was read, none
of a later one. Responses carry it as `X-Roster-Cursor` (the `after` of the next feed call).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from rosterdrop.feed.events import last_seq

HEADER = "X-Roster-Cursor"


@contextmanager
def consistent_read(district) -> Iterator[int]:
    """A read-only transaction on one committed state of the roster; yields the number of
    the district's last event in that state. Nothing may be written inside it."""
    if connection.in_atomic_block:  # already one transaction (a test's): one state
        yield last_seq(district.pk)
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cur:
            # Every statement of the transaction sees the snapshot of its first one.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield last_seq(district.pk)
        return
    # SQLite: Django's atomic would BEGIN IMMEDIATE and hold the write lock (settings:
    # transaction_mode) for the whole read; a deferred transaction only reads, and in WAL
    # mode it sees the state of its first read to its end while imports go on writing.
    connection.ensure_connection()
    with connection.cursor() as cur:
        cur.execute("BEGIN DEFERRED")
        try:
            yield last_seq(district.pk)
        finally:
            cur.execute("COMMIT")
