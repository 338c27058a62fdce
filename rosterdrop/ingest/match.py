"""Match: the members of an upload -> the format, each file's spec and its mode.

Names match exactly (case-sensitive), as OneRoster and most vendors require; a near miss
("Users.csv") is named in the finding so the fix is obvious.
"""

from dataclasses import dataclass

from rosterdrop.formats import FORMATS, get_format
from rosterdrop.formats.spec import FileSpec, FormatSpec, Mode
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import FATAL, WARNING, Failure, Finding, FindingLog
from rosterdrop.ingest.read import read_table
from rosterdrop.ingest.unpack import Member


@dataclass
class Matched:
    format: FormatSpec
    reason: str
    files: list[tuple[FileSpec, Member, Mode]]


def read_manifest(member: Member) -> dict[str, str]:
    with member.open() as stream:
        table = read_table(member.name, decode(stream, member.name).chunks)
        if table.header[:2] != ["propertyName", "value"]:
            raise Failure(
                Finding(
                    FATAL,
                    "manifest_invalid",
                    f"{member.name} must have the columns propertyName,value.",
                    member.name,
                    1,
                )
            )
        return {k.strip(): v.strip() for b in table.batches for k, v, _ in b.iter_rows()}


def detect(members: dict[str, Member]) -> tuple[FormatSpec, str]:
    """Recognise the format from the file names (and the manifest's version)."""
    for spec in FORMATS.values():
        if spec.manifest and spec.manifest.name in members:
            props = read_manifest(members[spec.manifest.name])
            version = props.get(spec.manifest.version_property, "")
            if version in spec.manifest.versions:
                return spec, (
                    f"{spec.manifest.name} says {spec.manifest.version_property} = {version}"
                )
    best, best_names = None, set()
    for spec in FORMATS.values():
        if spec.manifest:
            continue
        names = {f.name for f in spec.files} & set(members)
        if len(names) > len(best_names):
            best, best_names = spec, names
    if best is None:
        raise Failure(
            Finding(
                FATAL,
                "format_unknown",
                "These files do not look like any roster format rosterdrop knows: "
                + ", ".join(sorted(members))
                + ".",
            )
        )
    return best, f"no manifest; file names {', '.join(sorted(best_names))} match {best.title}"


def match(members: list[Member], format_slug: str | None, log: FindingLog) -> Matched:
    by_name = {m.name: m for m in members}
    if format_slug:
        spec, reason = get_format(format_slug), "the format configured for the district"
    else:
        spec, reason = detect(by_name)
    modes = _modes(spec, by_name, log)
    files = []
    for file in spec.files:
        member = by_name.get(file.name)
        mode = modes.get(file.name, Mode.ABSENT)
        if member is None:
            near = next((n for n in by_name if n.lower() == file.name.lower()), None)
            if mode != Mode.ABSENT or spec.all_files_required or near:
                hint = f" (found {near!r}: file names are case-sensitive)" if near else ""
                raise Failure(
                    Finding(
                        FATAL,
                        "file_missing",
                        f"{file.name} is missing from the upload{hint}.",
                        file.name,
                        value=near or "",
                    )
                )
            continue
        if mode == Mode.ABSENT:
            log.add(
                Finding(
                    WARNING,
                    "file_not_in_manifest",
                    f"{file.name} was sent but the manifest does not list it as bulk or delta; "
                    "it was read as a full (bulk) file.",
                    file.name,
                )
            )
            mode = Mode.BULK
        files.append((file, member, mode))
    known = {f.name for f in spec.files} | set(spec.ignored_files)
    if spec.manifest:
        known.add(spec.manifest.name)
    for name in sorted(set(by_name) - known):
        log.add(
            Finding(
                WARNING,
                "file_unknown",
                f"{name} is not a file of {spec.title}; it was not read.",
                name,
            )
        )
    if not files:
        raise Failure(
            Finding(FATAL, "no_roster_files", f"The upload holds no {spec.title} roster files.")
        )
    return Matched(spec, reason, files)


def _modes(spec: FormatSpec, members: dict[str, Member], log: FindingLog) -> dict[str, Mode]:
    if spec.manifest is None:
        return {f.name: spec.default_mode for f in spec.files}
    manifest = members.get(spec.manifest.name)
    if manifest is None:
        raise Failure(
            Finding(
                FATAL,
                "manifest_missing",
                f"{spec.manifest.name} is missing; {spec.title} requires it to say which files "
                "are sent and whether each is a full (bulk) or a change (delta) file.",
                spec.manifest.name,
            )
        )
    props = read_manifest(manifest)
    for prop in spec.manifest.required_properties:
        if not props.get(prop):
            raise Failure(
                Finding(
                    FATAL,
                    "manifest_invalid",
                    f"{spec.manifest.name} has no {prop} row.",
                    spec.manifest.name,
                    column=prop,
                )
            )
    version = props[spec.manifest.version_property]
    if version not in spec.manifest.versions:
        raise Failure(
            Finding(
                FATAL,
                "format_mismatch",
                f"{spec.manifest.name} says {spec.manifest.version_property} = {version}, "
                f"but this upload is read as {spec.title}. Send {spec.title} files or ask for "
                "the district's format to be changed.",
                spec.manifest.name,
                value=version,
            )
        )
    modes = {}
    for file in spec.files:
        value = props.get(spec.manifest.file_property_prefix + file.name.removesuffix(".csv"), "")
        try:
            modes[file.name] = Mode(value) if value else Mode.ABSENT
        except ValueError:
            raise Failure(
                Finding(
                    FATAL,
                    "manifest_invalid",
                    f"{spec.manifest.name} gives {file.name} the mode {value!r}; it must be "
                    "absent, bulk or delta.",
                    spec.manifest.name,
                    value=value,
                )
            ) from None
    return modes
