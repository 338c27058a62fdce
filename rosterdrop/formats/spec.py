"""The vocabulary in which roster formats are written: data that the import engine interprets.

A format names its files; a file names its columns (with a type, whether required, allowed
values) and the canonical entities it feeds (`Output`). How values are written (delimiter,
date forms, enum case) is the format's `Dialect`; which problems stop a whole upload is its
`fatal` list. Nothing in the engine knows a format by name.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from rosterdrop.roster.schema import REFS, Ref


class Type(StrEnum):
    STRING = "string"
    ID = "id"  # OneRoster GUID: letters, digits and . - _ / @
    IDS = "ids"  # comma list of IDs
    DATE = "date"  # YYYY-MM-DD (or the dialect's other date forms, normalised)
    DATETIME = "datetime"  # ISO 8601 in UTC with Z
    BOOLEAN = "boolean"  # true / false
    YEAR = "year"  # YYYY
    ENUM = "enum"
    ENUMS = "enums"  # comma list of enum values
    USER_IDS = "userIds"  # {type:id},{type:id}
    INTEGER = "integer"
    PHONE = "phone"  # E.164: + then up to 15 digits
    EMAIL = "email"  # an RFC 5322 addr-spec (the common dot-atom form)


class Mode(StrEnum):
    """How a file's rows relate to the current roster."""

    BULK = "bulk"  # the full set: records missing from it are removed
    DELTA = "delta"  # only changes, each row carrying its status
    ABSENT = "absent"  # not sent: leave the roster as it is


NUMBER = "{n}"  # in a column name: a numbered column such as location_id_2 .. location_id_999


@dataclass(frozen=True)
class Derive:
    """How a required value that exporters commonly leave out is made from another column
    of the same row, with a warning: that column's value, or the year in it (a school year
    from a session's end date)."""

    column: str
    year: bool = False


@dataclass(frozen=True)
class Column:
    name: str
    type: Type = Type.STRING
    required: bool = False
    values: tuple[str, ...] = ()
    extensible: bool = False  # OneRoster 1.2: custom enum terms written "ext:Name"
    # Columns that only carry delta bookkeeping (status, dateLastModified).
    delta_only: bool = False
    # Other header names that mean this column (a national variant of a format).
    aliases: tuple[str, ...] = ()
    # Read and checked, never kept (passwords).
    secret: bool = False
    # With "{n}" in the name: the range of numbers the format allows (first, last).
    numbered: tuple[int, int] | None = None
    # Required, but derived from another column where the export left it out.
    derive: Derive | None = None
    # Dropped by a later revision of the format (OneRoster 1.2.1's users.csv has no
    # resourceSourcedIds): read when a file has it, no finding when it has not, never written.
    retired: bool = False

    def matches(self, header_name: str) -> bool:
        if self.numbered is None:
            return header_name == self.name or header_name in self.aliases
        found = re.fullmatch(re.escape(self.name).replace(re.escape(NUMBER), r"(\d+)"), header_name)
        return found is not None and self.numbered[0] <= int(found[1]) <= self.numbered[1]


@dataclass(frozen=True)
class Joined:
    """The ID of a record a format only implies (Clever's terms, courses, unnamed contacts).

    These columns' values joined with ":" (empty ones too), the same way as a key of those
    columns; null unless at least one of `needs` holds a value (then there is no record).
    """

    columns: tuple[str, ...]
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Output:
    """One canonical entity fed by a file: canonical field -> source column.

    With `explode`, one record is made per item of that comma-list column; with `unpivot`,
    one per non-empty value among those columns (a name may hold "{n}"). In both, the source
    column name "@item" stands for the item. The key joins the values of `key` with ":" (each
    with "," written %2C and "%" %25, so that the ID can be listed); a field whose source is a
    tuple of columns gets them joined the same way (a derived ID), or null if any is empty;
    a `Joined` source is null only when all its `needs` are empty. `where` keeps only rows
    whose column is non-empty (True) or empty (False); `where_any`, rows where at least one of
    those columns is non-empty. `translate` maps source values to canonical ones per field.
    `deduplicate`: several rows may describe the same record (one row per contact, per
    school...); the first whose references resolve is kept, silently. `key_space` keeps
    the keys of this output apart from those of another output of the same entity whose IDs
    may repeat them (ALO's two enrollment files both number from 1): "space:" + key.
    """

    entity: str
    fields: Mapping[str, str | tuple[str, ...] | Joined]
    key: tuple[str, ...] = ("sourcedId",)
    explode: str | None = None
    unpivot: tuple[str, ...] = ()
    constants: dict[str, str] = field(default_factory=dict)
    keep_extra: bool = True
    where: dict[str, bool] = field(default_factory=dict)
    where_any: tuple[str, ...] = ()
    translate: dict[str, dict[str, str]] = field(default_factory=dict)
    deduplicate: bool = False
    key_space: str = ""

    @property
    def derived(self) -> bool:
        """Records made from items or repeated rows: their duplicates echo the source rows."""
        return bool(self.explode or self.unpivot or self.deduplicate)

    def sources(self) -> set[str]:
        """Every source column this output reads."""
        names = set(self.key) | set(self.where) | set(self.where_any) | set(self.unpivot)
        for source in self.fields.values():
            if isinstance(source, Joined):
                names.update(source.columns)
            else:
                names.update((source,) if isinstance(source, str) else source)
        if self.explode:
            names.add(self.explode)
        return names


@dataclass(frozen=True)
class RequireOneOf:
    """A row rule: at least one of these columns must hold a value, or the row is skipped."""

    columns: tuple[str, ...]
    code: str
    why: str  # "staff need a phone or an email to be reached"


@dataclass(frozen=True)
class Link:
    """A column whose values must name a row of another file: `file`.`target`.

    For links no canonical field carries (ALO: Students.`Teacher ID` = Staff.`ID`, kept as
    metadata), so they are checked on the source files. A broken link is a warning (the value
    is kept as sent) unless the format makes `reference_missing` fatal.
    """

    column: str
    file: str
    target: str


@dataclass(frozen=True)
class Dialect:
    """How a format writes its values and names its files and columns."""

    # Candidate field separators; the one found in the header line is used.
    delimiters: str = ","
    # Makes the next character literal (a quote, the delimiter, a newline); "" = none.
    escapechar: str = ""
    # Accepted date forms (strptime); values in any but the first are normalised to ISO.
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    # Enum and boolean values match in any case and are stored in the spec's case, silently.
    case_insensitive_enums: bool = False
    # File names match whatever their case (SDS v1 samples come in lower case).
    case_insensitive_names: bool = False
    # Optional columns may be left out of the header without a warning.
    optional_columns_may_be_absent: bool = False
    # Encoding used when a file is neither UTF-8 nor has a byte order mark ("" = district's).
    encoding: str = ""


@dataclass(frozen=True)
class FileSpec:
    name: str
    columns: tuple[Column, ...]
    outputs: tuple[Output, ...]
    # Source column that holds a row's status in delta mode ("" when the format has none).
    status_column: str = ""
    extra_prefix: str = "metadata."  # extension columns the format allows to the right
    # Any extra column is welcome (kept as metadata, no warning): "student attributes".
    open_columns: bool = False
    required: bool = False  # the file must be in every upload
    # Columns whose non-empty values must be unique in the file (names of schools...).
    unique: tuple[str, ...] = ()
    row_rules: tuple[RequireOneOf, ...] = ()
    links: tuple[Link, ...] = ()
    dialect: Dialect | None = None  # None: the format's
    # This file's own mode when sent (a custom template's add-only = delta); None: the format's.
    mode: Mode | None = None

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.matches(name)), None)

    def present(self, header: list[str]) -> list[tuple[Column, str]]:
        """The spec's columns found in a header, each with the header name it goes by."""
        return [(col, h) for h in header if (col := self.column(h)) is not None]


@dataclass(frozen=True)
class Manifest:
    """A manifest file: OneRoster's property list, or a one-row table (ALO's Manifest.csv)."""

    name: str
    version_property: str = ""  # "" = the manifest names no version
    versions: tuple[str, ...] = ()
    file_property_prefix: str = ""  # "file." + file stem; "" = no per-file modes
    required_properties: tuple[str, ...] = ()
    # A one-row table with these columns instead of propertyName,value rows.
    columns: tuple[str, ...] = ()
    # The property that must equal the receiving account's ID ("" = not checked).
    account_property: str = ""
    # Other properties it may hold (any other is told, with a did-you-mean).
    optional_properties: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    """A format's answer to "is this file mine?" for a name sent to it.

    `name`: the format's own name for the file ("" when it is not one of its files, or is a
    zip); `near`: not its file, but one of its names in another letter case (the did-you-mean);
    `reason`: why it is not read, in the words every path (match, SFTP/FTPS, web, CLI, mail)
    uses.
    """

    sent: str
    name: str = ""
    package: bool = False  # a .zip: its members are asked one by one
    near: str = ""
    reason: str = ""

    @property
    def mine(self) -> bool:
        return bool(self.name) or self.package


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
    dialect: Dialect = field(default_factory=Dialect)
    # Issue codes that refuse the whole upload in this format: code -> files ((): any file).
    fatal: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The upload must be one zip file.
    zip_required: bool = False
    # "entity.field" references that skip the record when broken, where the schema only warns:
    # each with the format's reason, said in the issue ("" = none).
    strict_references: dict[str, str] = field(default_factory=dict)
    # Whether `validate` may pick this format by itself (custom templates cannot be guessed).
    detectable: bool = True
    # entity -> how a district adds a file of it when the format has none yet (custom
    # templates: the kind of template to add).
    add_file: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        files = tuple(f if f.dialect else replace(f, dialect=self.dialect) for f in self.files)
        object.__setattr__(self, "files", files)

    def file(self, name: str) -> FileSpec | None:
        return next((f for f in self.files if f.name == name), None)

    @property
    def known_names(self) -> tuple[str, ...]:
        """Every file name the format knows: its manifest, its files, those it leaves alone."""
        manifest = (self.manifest.name,) if self.manifest else ()
        return (*manifest, *(f.name for f in self.files), *self.ignored_files)

    def claim(self, sent: str) -> Claim:
        """Whether a file sent under this name is the format's: its exact name, or the same
        name in another case where the dialect allows it (SDS v1); a zip is a package."""
        if sent.lower().endswith(".zip"):
            return Claim(sent, package=True)
        if sent in self.known_names:
            return Claim(sent, sent)
        near = next((n for n in self.known_names if n.lower() == sent.lower()), "")
        if near and self.dialect.case_insensitive_names:
            return Claim(sent, near)
        names = ", ".join(f.name for f in self.files)
        exact = "" if self.dialect.case_insensitive_names else " (file names are case-sensitive)"
        reason = (
            f"{sent} is not a file of {self.title}, so it was not imported. The files it reads "
            f"are {names}{exact}."
        )
        if near:
            reason += f" Did you mean {near}?"
        return Claim(sent, near=near, reason=reason)

    def how_to_send(self, entity: str) -> str:
        """What to do when rows name records of an entity that no file sent: send the files
        of the format that hold them, or add one."""
        files = [f.name for f in self.files if any(o.entity == entity for o in f.outputs)]
        if files:
            return f"Send {' or '.join(files)} with the other files."
        return self.add_file.get(entity, f"{self.title} has no file that holds them.")

    @property
    def entities(self) -> set[str]:
        return {o.entity for f in self.files for o in f.outputs}

    @property
    def references(self) -> dict[str, tuple[Ref, ...]]:
        """The canonical references, with this format's strict ones made strong."""
        strict = {tuple(s.split(".", 1)): why for s, why in self.strict_references.items()}

        def made_strict(entity: str, ref: Ref) -> Ref:
            why = strict.get((entity, ref.field))
            return ref if why is None else replace(ref, strong=True, why=why)

        return {
            entity: tuple(made_strict(entity, r) for r in refs) for entity, refs in REFS.items()
        }
