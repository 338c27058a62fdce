"""The rows a sync's issues are on, as the district sent them, kept when the sync is imported.

The data assistant names the people a sync skipped from them, and "why is X" shows the rows an
ID appears on with their issues and the causes of those: read from the raw files on each
request, that took seconds at 50k students and ~20 s at 500k. They are read back once here,
from the files the import just read, up to the last line an issue is on.

They quote raw uploads, so retention deletes them with the upload's bytes (`forget`, on
inbox.signals.upload_purged), as it did what the pages read before.
"""

from collections.abc import Iterable
from pathlib import Path

from django.db import transaction

from rosterdrop.ingest.findings import ERROR, Failure, Finding
from rosterdrop.ingest.models import IssueRow
from rosterdrop.ingest.report import stored
from rosterdrop.ingest.sent_rows import rows_at
from rosterdrop.ingest.unpack import Limits, unpack

# Rows kept per sync: those of error issues first (the rows a sync skipped), then warnings.
KEPT = 2000


def _lines(findings: Iterable[Finding]) -> dict[str, set[int]]:
    """{file: lines} of the first KEPT rows issues are on, errors' rows first."""
    placed = [(f.severity != ERROR, f.file, f.line) for f in findings if f.file and f.line]
    placed.sort(key=lambda p: p[0])  # stable: errors first, each in the order found
    lines: dict[str, set[int]] = {}
    kept = 0
    for _, file, line in placed:
        at = lines.setdefault(file, set())
        if line > 1 and line not in at and kept < KEPT:
            at.add(line)
            kept += 1
    return {file: found for file, found in lines.items() if found}


def keep(sync, uploads: list, paths: list[Path], findings: Iterable[Finding], limits: Limits):
    """Read the rows `findings` are on from the sync's files (`paths`, named as `uploads`
    were sent) and keep them for the sync, replacing what it kept before (a held sync being
    approved)."""
    wanted = _lines(findings)
    by_name = {upload.filename: upload for upload in uploads}
    rows = []
    if wanted:
        try:
            members = unpack(paths, limits)
        except Failure:
            members = []
        for member in members:
            if member.name not in wanted:
                continue
            upload = by_name.get(member.package or member.name)
            header, found = rows_at(member, sync.district.fallback_encoding, wanted[member.name])
            rows += [
                IssueRow(
                    sync=sync,
                    upload=upload,
                    file=member.name,
                    line=line,
                    header=[stored(cell) for cell in header],
                    cells=[stored(cell) for cell in cells],
                )
                for line, cells in sorted(found.items())
            ]
    with transaction.atomic():
        IssueRow.objects.filter(sync=sync).delete()
        IssueRow.objects.bulk_create(rows)


def repeat(sync, earlier, uploads: list) -> None:
    """A sync of files seen before (ingest.resent) keeps the earlier one's rows, each with
    its own upload of the same name: retention of either deletes its own."""
    by_name = {upload.filename: upload for upload in uploads}
    IssueRow.objects.bulk_create(
        IssueRow(
            sync=sync,
            upload=by_name.get(row.upload.filename) if row.upload else None,
            file=row.file,
            line=row.line,
            header=row.header,
            cells=row.cells,
        )
        for row in earlier.issue_rows.select_related("upload")
    )


def of(sync) -> list[IssueRow]:
    return list(sync.issue_rows.order_by("file", "line"))


def forget(sender, upload, **kwargs) -> None:
    """Retention deleted an upload's bytes: the rows quoted from them go too."""
    IssueRow.objects.filter(upload=upload).delete()
