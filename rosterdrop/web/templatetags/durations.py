"""`{{ start|took:end }}`: how long something took, in seconds as people read them."""

from django import template

register = template.Library()


@register.filter
def took(start, end) -> str:
    """ "0.4 s", "12 s", "3 min 5 s"; blank while it has not ended."""
    if not start or not end:
        return ""
    seconds = (end - start).total_seconds()
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"
