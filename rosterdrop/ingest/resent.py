"""Re-sent uploads: the same bytes, read the same way, against the roster they left.

An SIS that exports on a schedule often sends the very same files again when nothing changed
(docs/DESIGN.md: "re-sending the same bytes changes nothing"). When a sync was made from the same
files, with the same format spec and settings, and the roster still carries the token that
sync left, reading the files again can only find what it found: every record unchanged and
the same issues. The new sync says so, with those issues, without reading the files.

What decides the result is in the digest: each file's name and sha256, the district, its
fallback encoding, the format spec as it is now (a custom template edited since counts as
another format) and rosterdrop's version.
"""

import hashlib

from django.db import connection, transaction
from django.utils import timezone

from rosterdrop.districts.models import District
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import states
from rosterdrop.ingest.models import Issue, Sync
from rosterdrop.ingest.plan import COUNTS
from rosterdrop.roster.store import roster_token

# The statuses of syncs whose result still holds while the roster keeps their token.
REPEATABLE = (Sync.Status.APPLIED, Sync.Status.APPLIED_WITH_ERRORS, Sync.Status.NO_CHANGES)


def input_digest(context: str, uploads: list[Upload]) -> str:
    """sha256 of everything that decides what importing these uploads finds: how rows are
    read (`context`: vouched.context) and the files."""
    digest = hashlib.sha256()
    for part in (context, *sorted(f"{u.filename}\0{u.sha256}" for u in uploads)):
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()


def earlier_sync(district: District, digest: str) -> Sync | None:
    """The latest sync of the same input whose result the roster still reflects."""
    return (
        Sync.objects.filter(
            district=district,
            input_digest=digest,
            status__in=REPEATABLE,
            dry_run=False,
            roster_token=roster_token(district.pk),
        )
        .order_by("-id")
        .first()
    )


def _unchanged(changes: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The earlier sync's counts, as seen again: every record it kept is unchanged now."""
    return {
        entity: {
            **dict.fromkeys(COUNTS, 0),
            "unchanged": sum(counts.get(k, 0) for k in COUNTS if k != "removed"),
        }
        for entity, counts in changes.items()
    }


@transaction.atomic
def repeat(sync: Sync, earlier: Sync) -> None:
    """Record `sync` as the earlier one seen again: no changes, the same files and issues."""
    columns = 'severity, code, file, line, "column", value, message'
    table = Issue._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (sync_id, {columns}) "
            f"SELECT %s, {columns} FROM {table} WHERE sync_id = %s ORDER BY id",
            [sync.pk, earlier.pk],
        )
        copied = cur.rowcount
    states.move(
        sync,
        Sync.Status.NO_CHANGES,
        format=earlier.format,
        files=earlier.files,
        changes=_unchanged(earlier.changes),
        roster_token=earlier.roster_token,
        message=(
            f"The same files as sync {earlier.pk}, which the roster already reflects: nothing "
            "changed." + (f" Its issues ({copied}) are listed again." if copied else "")
        ),
        finished_at=timezone.now(),
    )
