"""Match: the members of an upload -> the format, each file's spec and its mode.

Names match exactly (case-sensitive) unless the format's dialect says otherwise; a near miss
("Users.csv") is named in the finding so the fix is obvious. Without a configured format the
format is recognised from file names, the manifest and each file's header, and the reason is
said in words.
"""

import codecs
import csv
import difflib
from dataclasses import dataclass, replace

from rosterdrop.formats import FORMATS
from rosterdrop.formats.spec import FileSpec, FormatSpec, Manifest, Mode
from rosterdrop.ingest.decode import decode
from rosterdrop.ingest.findings import ERROR, FATAL, WARNING, Failure, Finding, FindingLog
from rosterdrop.ingest.read import frames, read_table
from rosterdrop.ingest.unpack import Member

HEADER_BYTES = 64 << 10


@dataclass
class Matched:
    format: FormatSpec
    reason: str
    files: list[tuple[FileSpec, Member, Mode]]


def _fatal(code: str, message: str, file: str = "", column: str = "", value: str = "") -> Failure:
    return Failure(Finding(FATAL, code, message, file, 1 if column else None, column, value))


def read_manifest(member: Member, manifest: Manifest) -> dict[str, str]:
    """The manifest's properties: propertyName,value rows, or the columns of a one-row table."""
    with member.open() as stream:
        table = read_table(member.name, decode(stream, member.name).chunks)
        rows = [row for batch in frames(table) for row in batch.iter_rows()]
    if not manifest.columns:
        if table.header[:2] != ["propertyName", "value"]:
            raise _fatal(
                "manifest_invalid",
                f"{member.name} must have the columns propertyName,value.",
                member.name,
                "propertyName",
            )
        return {row[0].strip(): row[1].strip() for row in rows}
    missing = [c for c in manifest.columns if c not in table.header]
    if missing:
        raise _fatal(
            "manifest_invalid",
            f"{member.name} has no {' or '.join(repr(c) for c in missing)} column; its header "
            f"must be {','.join(manifest.columns)} (found {','.join(table.header)}). Download "
            "the file template for this account.",
            member.name,
            missing[0],
        )
    if len(rows) != 1:
        raise _fatal(
            "manifest_invalid",
            f"{member.name} must have exactly one row under its header; it has {len(rows)}.",
            member.name,
        )
    return {h: str(v).strip() for h, v in zip(table.header, rows[0], strict=False)}


def read_header(member: Member, delimiters: str) -> list[str]:
    """A member's header row, read cheaply for recognising the format."""
    with member.open() as stream:
        head = stream.read(HEADER_BYTES)
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            text = head.decode(encoding, errors="replace")
            break
    else:
        text = head.removeprefix(codecs.BOM_UTF8).decode("utf-8", errors="replace")
    line = text.splitlines()[0] if text else ""
    delimiter = next((d for d in delimiters if d in line), delimiters[0])
    return [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]


def _lookup(spec: FormatSpec, members: dict[str, Member]) -> dict[str, Member]:
    """Members by the name the format gives them (`FormatSpec.claim`); a name sent exactly
    wins over the same name in another case."""
    found: dict[str, Member] = {}
    for sent, member in sorted(members.items(), key=lambda item: item[0] not in spec.known_names):
        name = spec.claim(sent).name
        if name:
            found.setdefault(name, member)
    return found


def _fit(spec: FormatSpec, members: dict[str, Member]) -> tuple[int, str]:
    """How well an upload fits a format (0 = not at all), and why, in words."""
    why = []
    score = 0
    if spec.manifest:
        manifest = members.get(spec.manifest.name)
        if manifest is None:
            return 0, ""
        try:
            props = read_manifest(manifest, spec.manifest)
        except Failure:
            return 0, ""
        if spec.manifest.version_property:
            version = props.get(spec.manifest.version_property, "")
            if version not in spec.manifest.versions:
                return 0, ""
            why.append(f"{spec.manifest.name} says {spec.manifest.version_property} = {version}")
        else:
            why.append(f"{spec.manifest.name} has the columns " + ",".join(spec.manifest.columns))
        score += 1000
    found = _lookup(spec, members)
    fitting, named = [], []
    for file in spec.files:
        member = found.get(file.name)
        if member is None:
            continue
        assert file.dialect is not None  # a FormatSpec gives each of its files a dialect
        header = read_header(member, file.dialect.delimiters)
        present = {c.name for c, _ in file.present(header)}
        required = [c.name for c in file.columns if c.required]
        if required and all(c in present for c in required):
            fitting.append(file.name)
            score += 10
        elif present:
            named.append(file.name)
            score += 1
    if not fitting:
        return 0, ""
    why.append(f"{', '.join(fitting)} have the file names and required columns of {spec.title}")
    if named:
        why.append(f"{', '.join(named)} have its file names")
    return score, "; ".join(why)


def detect(members: dict[str, Member]) -> tuple[FormatSpec, str]:
    """Recognise the format from the manifest, the file names and the headers."""
    best, best_score, best_why = None, 0, ""
    for spec in FORMATS.values():
        if not spec.detectable:
            continue
        score, why = _fit(spec, members)
        if score > best_score:
            best, best_score, best_why = spec, score, why
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
    return best, f"recognised as {best.title}: {best_why}"


def match(
    members: list[Member], configured: FormatSpec | None, log: FindingLog, account: str = ""
) -> Matched:
    """The files of an upload, each with its spec and mode: the `configured` format's, or
    the one recognised. Every problem with the files as a set (a missing, extra or
    misnamed file, the manifest) is logged, all of them at once; the files that are there
    are returned all the same, so that their headers and rows are checked too (nothing is
    applied once anything is fatal). `account`: the receiving district's slug."""
    by_name = {m.name: m for m in members}
    if configured is not None:
        spec, reason = configured, "the format configured for the district"
    else:
        spec, reason = detect(by_name)
    log.fatal_codes, log.format_title = spec.fatal, spec.title
    if spec.zip_required and any(not m.package for m in members):
        log.add(
            _fatal(
                "zip_required",
                f"{spec.title} files must arrive together in one .zip file; "
                f"{', '.join(sorted(by_name))} came as loose files.",
            ).finding
        )
    found = _lookup(spec, by_name)
    props = _manifest(spec, found, account, log)
    modes = _modes(spec, props, log)
    files = []
    for file in spec.files:
        member = found.get(file.name)
        mode = modes.get(file.name, Mode.ABSENT)
        if member is None:
            near = next((n for n in by_name if spec.claim(n).near == file.name), None)
            needed = spec.all_files_required or file.required
            if mode != Mode.ABSENT and not needed and not near:
                log.add(
                    Finding(
                        WARNING,
                        "file_not_sent",
                        f"The manifest lists {file.name} as {mode}, but it was not sent; its "
                        "records were left as they are.",
                        file.name,
                        outcome="its records were left as they are",
                    )
                )
                continue
            if mode != Mode.ABSENT or needed:
                hint = f" (found {near!r}: file names are case-sensitive)" if near else ""
                log.add(
                    _fatal(
                        "file_missing", f"{file.name} is missing from the upload{hint}.", file.name
                    ).finding
                )
            continue
        if mode == Mode.ABSENT:
            mode = file.mode or spec.default_mode
            if props is not None and spec.manifest and spec.manifest.file_property_prefix:
                mode = Mode.BULK
                log.add(
                    Finding(
                        WARNING,
                        "file_not_in_manifest",
                        f"{file.name} was sent but the manifest does not list it as bulk or "
                        "delta; it was read as a full (bulk) file.",
                        file.name,
                    )
                )
        # Read and reported under the name it was sent as (school.csv for School.csv).
        files.append((replace(file, name=member.name), member, mode))
    _unknown_files(spec, by_name, {m.name for _, m, _ in files}, log)
    if not files:
        raise _fatal("no_roster_files", f"The upload holds no file of {spec.title}.")
    return Matched(spec, reason, files)


def _unknown_files(
    spec: FormatSpec, by_name: dict[str, Member], read: set[str], log: FindingLog
) -> None:
    """Files the format does not claim: a near miss of a known name is an error, else a
    warning; either says what `FormatSpec.claim` says everywhere else."""
    for name in sorted(set(by_name) - read):
        claim = spec.claim(name)
        if claim.mine:
            continue
        log.add(
            Finding(
                ERROR if claim.near else WARNING,
                "file_misnamed" if claim.near else "file_unknown",
                claim.reason,
                name,
                value=claim.near,
                outcome="so it was not imported",
            )
        )


def _manifest(
    spec: FormatSpec, members: dict[str, Member], account: str, log: FindingLog
) -> dict[str, str] | None:
    """The manifest's properties, checked: present, complete, the right version and account;
    every problem logged. None when there is no manifest to read (a format without one gives
    {})."""
    manifest = spec.manifest
    if manifest is None:
        return {}
    member = members.get(manifest.name)
    if member is None and manifest.file_property_prefix:
        # A set without its manifest (many exporters leave it out): each file is whole.
        log.add(
            Finding(
                WARNING,
                "manifest_missing",
                f"{manifest.name} is missing; each file sent was read as a full (bulk) file, "
                "and files not sent were left as they are.",
                manifest.name,
                outcome="each file sent was read as a full (bulk) file, and files not sent "
                "were left as they are",
            )
        )
        return None
    if member is None:
        purpose = (
            "to say which files are sent and whether each is a full (bulk) or a change (delta) file"
            if manifest.file_property_prefix
            else "to say which account the files are for"
        )
        log.add(
            _fatal(
                "manifest_missing",
                f"{manifest.name} is missing; {spec.title} requires it {purpose}.",
                manifest.name,
            ).finding
        )
        return None
    try:
        props = read_manifest(member, manifest)
    except Failure as failure:
        log.add(failure.finding)
        return None
    _unknown_properties(spec, props, log)
    for prop in manifest.required_properties:
        if not props.get(prop):
            log.add(
                _fatal(
                    "manifest_invalid", f"{manifest.name} has no {prop} value.", manifest.name, prop
                ).finding
            )
    version = props.get(manifest.version_property, "")
    if manifest.version_property and version and version not in manifest.versions:
        log.add(
            _fatal(
                "format_mismatch",
                f"{manifest.name} says {manifest.version_property} = {version}, "
                f"but this upload is read as {spec.title}. Send {spec.title} files or ask for "
                "the district's format to be changed.",
                manifest.name,
                value=version,
            ).finding
        )
    if manifest.account_property and account:
        stated = props.get(manifest.account_property, "")
        if stated and stated != account:
            log.add(
                _fatal(
                    "manifest_account_mismatch",
                    f"{manifest.name} says {manifest.account_property} = {stated!r}, but these "
                    f"files were sent to the account {account!r}. Use the {manifest.name} "
                    "downloaded for this account.",
                    manifest.name,
                    manifest.account_property,
                    stated,
                ).finding
            )
    return props


def _unknown_properties(spec: FormatSpec, props: dict[str, str], log: FindingLog) -> None:
    """A property the manifest does not define (fiel.demographics): said, with the one it
    most likely means; it is not read."""
    manifest = spec.manifest
    if manifest is None or manifest.columns:
        return
    stems = [n.removesuffix(".csv") for n in (*(f.name for f in spec.files), *spec.ignored_files)]
    known = [
        manifest.version_property,
        *manifest.required_properties,
        *manifest.optional_properties,
        *(manifest.file_property_prefix + stem for stem in stems),
    ]
    for prop in props:
        if prop in known:
            continue
        near = difflib.get_close_matches(prop, known, n=1, cutoff=0.75)
        hint = f" Did you mean {near[0]}?" if near else ""
        log.add(
            Finding(
                WARNING,
                "manifest_property_unknown",
                f"{manifest.name} has a property {prop!r} that the format does not define; it "
                f"was not read.{hint}",
                manifest.name,
                value=prop,
                outcome="it was not read",
            )
        )


def _modes(spec: FormatSpec, props: dict[str, str] | None, log: FindingLog) -> dict[str, Mode]:
    """Each file's mode: the manifest's word for it, or the format's default. Without a
    manifest to read (already fatal), every file sent is read as a full file."""
    manifest = spec.manifest
    if manifest is None or not manifest.file_property_prefix or props is None:
        return {f.name: spec.default_mode for f in spec.files if f.required}
    modes = {}
    for file in spec.files:
        value = props.get(manifest.file_property_prefix + file.name.removesuffix(".csv"), "")
        try:
            modes[file.name] = Mode(value) if value else Mode.ABSENT
        except ValueError:
            log.add(
                _fatal(
                    "manifest_invalid",
                    f"{manifest.name} gives {file.name} the mode {value!r}; it must be "
                    "absent, bulk or delta.",
                    manifest.name,
                    value=value,
                ).finding
            )
            modes[file.name] = Mode.ABSENT
    return modes
