"""The roster formats rosterdrop reads, by slug.

`custom` stands for a district's own import templates (rosterdrop.custom): its spec is built
from the database for the receiving account at import time, by the builder that the custom app
registers from its AppConfig.ready() (`register_builder`), so this package imports no app above
it.
"""

from collections.abc import Callable

from rosterdrop.formats.alo import ALO
from rosterdrop.formats.apple import APPLE_SCHOOL_MANAGER
from rosterdrop.formats.clever import CLEVER
from rosterdrop.formats.oneroster import ONEROSTER_10, ONEROSTER_11, ONEROSTER_12
from rosterdrop.formats.parentsquare import PARENTSQUARE
from rosterdrop.formats.sds import SDS_V1, SDS_V2, SDS_V21
from rosterdrop.formats.spec import FormatSpec

CUSTOM = "custom"

FORMATS: dict[str, FormatSpec] = {
    f.slug: f
    for f in (
        ONEROSTER_11,
        ONEROSTER_12,
        ONEROSTER_10,
        SDS_V1,
        SDS_V2,
        SDS_V21,
        CLEVER,
        APPLE_SCHOOL_MANAGER,
        PARENTSQUARE,
        ALO,
        FormatSpec(CUSTOM, "custom import templates", files=(), detectable=False),
    )
}


# Formats whose spec depends on the account (slug -> build(account)).
BUILDERS: dict[str, Callable[[str], FormatSpec]] = {}


def register_builder(slug: str, build: Callable[[str], FormatSpec]) -> None:
    """Build the spec of `slug` per account (a district slug) whenever it is asked for."""
    BUILDERS[slug] = build


def get_format(slug: str, account: str = "") -> FormatSpec:
    """The spec for a slug; for `custom`, the import templates of `account` (a district slug)."""
    if slug in BUILDERS:
        return BUILDERS[slug](account)
    try:
        return FORMATS[slug]
    except KeyError:
        known = ", ".join(FORMATS)
        raise ValueError(f"unknown format {slug!r}; known formats: {known}") from None
