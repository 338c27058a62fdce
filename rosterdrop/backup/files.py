"""The data folder's part of a backup: the files the copied database refers to, and the keys.

Copied: every raw upload the database keeps (the same bytes kept twice stay one file, hard
linked, in the backup as in the inbox), the roster snapshots of the roster tokens the copy
holds (any other is rebuilt from the database when needed), Django's secret key, and the
district SFTP/FTPS folders. The SSH host keys and the FTPS certificate are in the database.
Temporary folders (`tmp/`, `sftp-tmp/`, wizard samples) are not: nothing in them is kept.
With uploads in S3 (ROSTERDROP_STORAGE_URL) the raw uploads and the snapshots are copied from
the bucket (`copy_stored`), and a restore puts them back into the storage it runs with; one that
replaces deletes what rosterdrop keeps there that the backup does not hold.

Not copied: the incremental read's kept lines (ingest/lines.py). They are derived from the files
the roster was read from, and only spare work: a restored roster's next import reads its files
in full and keeps their lines anew. A restore that replaces deletes the ones there, which
describe a roster it replaced.
"""

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from django.conf import settings

from rosterdrop import storage
from rosterdrop.backup.database import Held
from rosterdrop.ingest import lines
from rosterdrop.intake import folder
from rosterdrop.roster.hashes import keys

# Replaced whole, in the data folder and in shared storage, by a restore that replaces: they
# hold only what a backup brings back, and the lines derived from it.
RESTORED_FOLDERS = ("inbox", "roster", "sftp", lines.FOLDER)


def _stored(held: Held) -> list[str]:
    """What the copy refers to in storage: the raw uploads, the roster snapshots."""
    snapshots = [key for district, _slug, token in held.districts for key in keys(district, token)]
    return list(dict.fromkeys(held.stored_paths + snapshots))


def wanted(held: Held) -> list[str]:
    """What to copy, relative to the data folder."""
    data = settings.DATA_DIR
    paths = [data / "secret_key"]
    for _district, slug, _token in held.districts:
        root = folder.district_root(slug)
        if root.is_dir():
            paths += [root / name for name, _st in folder.visible_files(root)]
    inside = [str(p.relative_to(data)) for p in paths if p.is_relative_to(data)]
    kept = _stored(held) if storage.shared() is None else []  # else: copy_stored
    return list(dict.fromkeys(inside + kept))


def copy_stored(held: Held, target: Path) -> dict:
    """Copy the raw uploads and snapshots from shared storage (S3) into `target`, by key; the
    manifest's part: sha256 per key, and those gone meanwhile (retention, a newer snapshot) as
    missing."""
    kept = storage.shared()
    stored: dict[str, str] = {}
    missing: list[str] = []
    if kept is None:  # in the data folder: copy_out has them
        return {"stored": stored, "missing": missing}
    for key in _stored(held):
        out = target / key
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.closing(kept.open(key)) as body, open(out, "xb") as copy:
                shutil.copyfileobj(body, copy, 1 << 20)
        except FileNotFoundError:
            out.unlink(missing_ok=True)
            missing.append(key)
            continue
        stored[key] = sha256(out)
    return {"stored": stored, "missing": missing}


def copy_out(names: list[str], target: Path) -> dict:
    """Copy the files into `target`; the manifest's part: sha256 per file, links, missing.

    A file gone meanwhile (retention, a newer snapshot) is listed as missing, not an error:
    the database copy still describes it, and a snapshot is rebuilt."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    missing: list[str] = []
    first: dict[tuple[int, int], str] = {}
    for name in names:
        source = settings.DATA_DIR / name
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = source.stat()
            inode = (st.st_dev, st.st_ino)
            if inode in first:
                os.link(target / first[inode], out)
                links[name] = first[inode]
                continue
            shutil.copy2(source, out)
        except FileNotFoundError:
            missing.append(name)
            continue
        first[inode] = name
        files[name] = sha256(out)
    return {"files": files, "links": links, "missing": missing}


def check(source: Path, manifest: dict) -> list[str]:
    """What is wrong with a backup's files (empty when every one is there, unchanged)."""
    problems = []
    for name, sha in {**manifest["files"], **manifest.get("stored", {})}.items():
        path = source / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256(path) != sha:
            problems.append(f"{name} is damaged (its sha256 differs)")
    return problems


def copy_in(source: Path, manifest: dict, replace: bool) -> None:
    """Put a backup's files into the data folder (each written whole, then named)."""
    data = settings.DATA_DIR
    if replace:
        for name in RESTORED_FOLDERS:
            shutil.rmtree(data / name, ignore_errors=True)
    for name in manifest["files"]:
        _place(data / name, lambda tmp, name=name: shutil.copy2(source / name, tmp))
    for name, first in manifest["links"].items():
        _place(data / name, lambda tmp, first=first: os.link(data / first, tmp))
    for key in manifest.get("stored", {}):
        storage.backend().put_file(key, source / key)
    bucket = storage.shared()
    if replace and bucket is not None:
        for name in RESTORED_FOLDERS:
            bucket.delete_others(f"{name}/", manifest.get("stored", {}))


def _place(path: Path, make) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".restoring-{path.name}")
    tmp.unlink(missing_ok=True)
    make(tmp)
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
