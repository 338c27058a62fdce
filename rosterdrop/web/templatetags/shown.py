"""How a page shows a roster value: an empty cell for a missing one, never Python's `None`,
and extra columns (metadata) as name: value pairs, never a Python dict. A builtin of the
console's templates (settings.TEMPLATES), so that every page can use it."""

from django import template

register = template.Library()


@register.filter
def shown(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{name}: {shown(v)}" for name, v in value.items())
    return value
