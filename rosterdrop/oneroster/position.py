"""Where in the change feed a read of the roster stands, so that a consumer that starts from
a full read (the CSV export, or the REST collections) can follow the feed from there without
missing or repeating a change.

A read runs in one transaction that sees one committed state of the roster, and the feed's
counter is read in it: every change of the events up to that number is in what was read, none
of a later one. Responses carry it as `X-Roster-Cursor` (the `after` of the next feed call).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from rosterdrop.feed.events import last_seq
from rosterdrop.roster import store

HEADER = "X-Roster-Cursor"


@contextmanager
def consistent_read(district) -> Iterator[int]:
    """A read-only transaction on one committed state of the roster; yields the number of
    the district's last event in that state. Nothing may be written inside it."""
    with store.one_state():
        yield last_seq(district.pk)
