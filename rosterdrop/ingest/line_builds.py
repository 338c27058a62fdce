"""The kept lines of a sync's full files that its own read did not keep, built after the sync.

A read keeps a file's lines for the next one (ingest/lines.py) only where the roster vouched
for its rows as it read them: such a read maps every row before its checks anyway. A first
import (or the first read after the district's settings changed) checks every row first;
mapping each again before its checks, to keep its line, cost it +1.4 s CPU in 35 at `large`
(bench/README.md, "The incremental read"). So those lines are kept after the sync, off the
import's path, by the build that makes the sync's SIS search index (index_builds.py): the
files read again, each line hashed and mapped, unchecked, as a vouched read keeps it, and
nothing else. The next night's read then finds them.

Built only for the roster the sync left (its token still the district's: a later sync keeps
its own), for the files of the entities the roster vouches for in the district's context,
and those the read kept nothing of. With shared storage (S3) none are built: the next read is
full, as before (it keeps them).
"""

import shutil
from pathlib import Path

from rosterdrop import process, storage
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import syncs
from rosterdrop.ingest.engine import Settings, tmp_dir
from rosterdrop.ingest.findings import Failure, FindingLog
from rosterdrop.ingest.lines import LineFiles
from rosterdrop.ingest.match import match
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.reader import Reader, limits
from rosterdrop.ingest.unpack import unpack
from rosterdrop.roster import hashes, store
from rosterdrop.timing import timed


def wanted(sync: Sync) -> bool:
    """Whether lines may be kept for the sync: it left the roster the district has now."""
    token = sync.roster_token
    return (
        storage.shared() is None
        and token is not None
        and token == store.roster_token(sync.district_id)
    )


@timed("kept lines")
def keep(sync: Sync, uploads: list[Upload]) -> None:
    """Keep the lines of the sync's files (its kept `uploads`) that its read did not keep."""
    if not wanted(sync):
        return
    with syncs.fetched(uploads, "lines-") as paths:
        _keep(sync, paths, syncs.digests(uploads))


def _keep(sync: Sync, paths: list[Path], digests: dict[str, str]) -> None:
    district, token = sync.district, sync.roster_token
    assert token is not None  # wanted
    settings = Settings.of(district)
    now = settings.context(district.pk)
    vouched = hashes.Snapshot(district.pk, token).vouched
    entities = frozenset(e for e, then in vouched.items() if then == now)
    if settings.format is None or not entities:
        return
    staged = process.mkdtemp("lines-", tmp_dir())
    try:
        lines = LineFiles(district.pk, token, now, staged, digests)
        log = FindingLog()
        reader = Reader(log, settings.fallback_encoding, vouched=entities, lines=lines)
        try:
            matched = match(unpack(paths, limits(), log), settings.format, log, settings.account)
            for file, member, mode in matched.files:
                reader.keep_lines(matched.format, file, member, mode)
        except Failure:  # a file that cannot be read: its sync said so; its lines are not kept
            return
        if wanted(sync):
            lines.add()
    finally:
        shutil.rmtree(staged, ignore_errors=True)
