"""The vocabulary in which roster formats are written: data that the import engine interprets.

A format names its files; a file names its columns (with a type, whether required, allowed
values) and the canonical entities it feeds (`Output`). Nothing in the engine knows a format
by name.
"""

from dataclasses import dataclass, field
from enum import StrEnum


class Type(StrEnum):
    STRING = "string"
    ID = "id"  # OneRoster GUID: letters, digits and . - _ / @
    IDS = "ids"  # comma list of IDs
    DATE = "date"  # YYYY-MM-DD
    DATETIME = "datetime"  # ISO 8601 in UTC with Z
    BOOLEAN = "boolean"  # true / false
    YEAR = "year"  # YYYY
    ENUM = "enum"
    ENUMS = "enums"  # comma list of enum values
    USER_IDS = "userIds"  # {type:id},{type:id}
    INTEGER = "integer"


class Mode(StrEnum):
    """How a file's rows relate to the current roster."""

    BULK = "bulk"  # the full set: records missing from it are removed
    DELTA = "delta"  # only changes, each row carrying its status
    ABSENT = "absent"  # not sent: leave the roster as it is


@dataclass(frozen=True)
class Column:
    name: str
    type: Type = Type.STRING
    required: bool = False
    values: tuple[str, ...] = ()
    extensible: bool = False  # OneRoster 1.2: custom enum terms written "ext:Name"
    # Columns that only carry delta bookkeeping (status, dateLastModified).
    delta_only: bool = False


@dataclass(frozen=True)
class Output:
    """One canonical entity fed by a file: canonical field -> source column.

    With `explode`, one record is made per item of that comma-list column, and the source
    column name "@item" stands for the item. The key joins the values of `key` with ":".
    """

    entity: str
    fields: dict[str, str]
    key: tuple[str, ...] = ("sourcedId",)
    explode: str | None = None
    constants: dict[str, str] = field(default_factory=dict)
    keep_extra: bool = True


@dataclass(frozen=True)
class FileSpec:
    name: str
    columns: tuple[Column, ...]
    outputs: tuple[Output, ...]
    # Source column that holds a row's status in delta mode ("" when the format has none).
    status_column: str = ""
    extra_prefix: str = "metadata."  # extension columns the format allows to the right

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Manifest:
    """A manifest file declaring version and per-file mode (OneRoster's manifest.csv)."""

    name: str
    version_property: str
    versions: tuple[str, ...]
    file_property_prefix: str  # "file." + file stem
    required_properties: tuple[str, ...]


@dataclass(frozen=True)
class FormatSpec:
    slug: str
    title: str
    files: tuple[FileSpec, ...]
    manifest: Manifest | None = None
    # Without a manifest: the mode of every file sent, and whether all files must be sent.
    default_mode: Mode = Mode.BULK
    all_files_required: bool = False
    header_order: bool = True  # columns must come in the spec's order
    # Files of the format that carry no roster data: recognised, then left alone.
    ignored_files: tuple[str, ...] = ()

    def file(self, name: str) -> FileSpec | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def entities(self) -> set[str]:
        return {o.entity for f in self.files for o in f.outputs}
