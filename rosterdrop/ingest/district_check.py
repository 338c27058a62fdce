"""Check files as one district's upload would be checked, applying nothing: its format (or
custom templates), manifest account, fallback encoding, strictness and current roster.

`rosterdrop validate PATH --district SLUG` and the web upload's "Check only" both run this.
"""

from pathlib import Path

from rosterdrop.ingest.outcome import Checked
from rosterdrop.ingest.pipeline import ActiveKeys, check
from rosterdrop.roster.hashes import Snapshot
from rosterdrop.roster.store import roster_token


def check_for_district(
    paths: list[Path],
    district,
    *,
    format_slug: str | None = None,
    encoding: str | None = None,
    strict: bool = False,
) -> Checked:
    """The district's import checks on these files; nothing is stored or applied."""
    # The current roster, so references to records not sent now resolve.
    known = ActiveKeys(lambda: Snapshot(district.pk, roster_token(district.pk)))
    return check(
        paths,
        format_slug or district.format,
        encoding or district.fallback_encoding or "cp1252",
        known=known,
        account=district.slug,
        strict=strict or district.strict,
    )
