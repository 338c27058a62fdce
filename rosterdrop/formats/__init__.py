"""The roster formats rosterdrop reads, by slug."""

from rosterdrop.formats.oneroster import ONEROSTER_10, ONEROSTER_11, ONEROSTER_12
from rosterdrop.formats.spec import FormatSpec

FORMATS: dict[str, FormatSpec] = {f.slug: f for f in (ONEROSTER_11, ONEROSTER_12, ONEROSTER_10)}


def get_format(slug: str) -> FormatSpec:
    try:
        return FORMATS[slug]
    except KeyError:
        known = ", ".join(FORMATS)
        raise ValueError(f"unknown format {slug!r}; known formats: {known}") from None
