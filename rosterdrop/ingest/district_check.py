"""Check files as one district's upload would be checked, applying nothing: its format (or
custom templates), manifest account, fallback encoding, strictness and current roster.

`rosterdrop validate PATH --district SLUG` and the web upload's "Check only" both run this.
"""

from pathlib import Path

from rosterdrop.districts.models import District
from rosterdrop.ingest.engine import ActiveKeys, Against, Settings, check
from rosterdrop.ingest.outcome import Checked
from rosterdrop.roster.hashes import Snapshot
from rosterdrop.roster.store import roster_token


def check_for_district(
    paths: list[Path],
    district: District,
    *,
    format_slug: str | None = None,
    encoding: str | None = None,
    strict: bool = False,
) -> Checked:
    """The district's import checks on these files; nothing is stored or applied."""
    # `encoding` None: the district's own fallback, blank included (UTF-8 only), as its import.
    settings = Settings.of(district, format_slug, encoding, strict)
    # The current roster, so references to records not sent now resolve.
    known = ActiveKeys(lambda: Snapshot(district.pk, roster_token(district.pk)))
    return check(paths, settings, Against(known))
