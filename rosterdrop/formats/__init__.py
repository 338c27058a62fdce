"""The roster formats rosterdrop reads, by slug.

`custom` stands for a district's own import templates (rosterdrop.custom): its spec is built
from the database for the receiving account at import time.
"""

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


def get_format(slug: str, account: str = "") -> FormatSpec:
    """The spec for a slug; for `custom`, the import templates of `account` (a district slug)."""
    if slug == CUSTOM:
        from rosterdrop.custom.templates import district_format

        return district_format(account)
    try:
        return FORMATS[slug]
    except KeyError:
        known = ", ".join(FORMATS)
        raise ValueError(f"unknown format {slug!r}; known formats: {known}") from None
