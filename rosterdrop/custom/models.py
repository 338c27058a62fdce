"""A district's own import template: one exact file name, what it holds, how its columns map."""

import json
from typing import Any

from django.db import models

from rosterdrop.districts.models import District

DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


class OrderedJSONField(models.TextField):  # type: ignore[type-arg]
    """JSON stored as the text it was written as. A JSONField is jsonb on PostgreSQL, which
    sorts an object's keys (shortest first): a template's columns, kept in its file's order
    on SQLite, came back in another order there (its header template, its page)."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    def get_prep_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj), ensure_ascii=False)


class ImportTemplate(models.Model):
    class Mode(models.TextChoices):
        SNAPSHOT = "snapshot", "Full snapshot (records missing from the file are removed)"
        ADD_ONLY = "add_only", "Add and update only (nothing is removed)"

    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="templates")
    file_name = models.CharField(max_length=255, help_text="Exact, case-sensitive, with extension.")
    kind = models.CharField(max_length=20, help_text="What the file holds: students, teachers...")
    # Source column -> template field (see rosterdrop.custom.templates.KINDS), "" = ignored.
    columns = OrderedJSONField(default=dict)
    delimiter = models.CharField(max_length=1, default=",")
    encoding = models.CharField(max_length=40, blank=True, help_text="Blank: the district's.")
    date_format = models.CharField(max_length=20, default="%Y-%m-%d")
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.SNAPSHOT)
    make_schools = models.BooleanField(
        default=False,
        help_text="Make a school of each school code the file names (named by its code), for "
        "a district that sends no schools file.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["district", "file_name"]
        constraints = [
            models.UniqueConstraint(fields=["district", "file_name"], name="template_file_unique")
        ]

    def __str__(self) -> str:
        return f"{self.district.slug}/{self.file_name}"

    @property
    def delimiter_name(self) -> str:
        """In words: a tab shows as nothing on a page."""
        return DELIMITER_NAMES.get(self.delimiter, self.delimiter)
