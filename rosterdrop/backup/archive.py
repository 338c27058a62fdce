"""A backup folder, made by `rosterdrop backup DEST` and read by `rosterdrop restore SRC`.

A backup is a folder: `manifest.json`, the database (`database.sqlite3` or `database.pgdump`)
and `files/`, the data folder's files by their relative paths (and the raw uploads by their keys,
when they are kept in S3: `stored`). It is taken while the service
runs: the database is copied as of one moment (`database.py`), then the files that copy refers
to (`files.py`); it is written under a temporary name and named DEST only when complete.
A restore checks every file's sha256 before it changes anything.
"""

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.db import DatabaseError, connection

from rosterdrop.backup import database, files
from rosterdrop.districts.models import District

FORMAT = 1
MANIFEST = "manifest.json"


@dataclass
class Summary:
    engine: str
    uploads: int
    files: int
    missing: list[str]


def backup(dest: Path) -> Summary:
    if dest.exists():
        raise FileExistsError(f"{dest} exists; a backup goes to a new folder")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a backup that died half-way
    partial.mkdir(mode=0o700, parents=True)  # student data and private keys
    try:
        name, held = database.dump(partial)
        copied = files.copy_out(files.wanted(held), partial / "files")
        stored = files.copy_stored(held, partial / "files")
        copied["missing"] += stored["missing"]
        manifest = {
            "rosterdrop_backup": FORMAT,
            "made_at": datetime.now(UTC).isoformat(),
            "engine": connection.vendor,
            "database": name,
            "database_sha256": files.sha256(partial / name),
            "uploads": len(held.stored_paths),
            **copied,
            "stored": stored["stored"],
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.replace(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    count = len(copied["files"]) + len(copied["links"]) + len(stored["stored"])
    return Summary(connection.vendor, len(held.stored_paths), count, copied["missing"])


def restore(source: Path, replace: bool = False) -> Summary:
    manifest = read_manifest(source)
    problems = files.check(source / "files", manifest)
    if files.sha256(source / manifest["database"]) != manifest["database_sha256"]:
        problems.append(f"{manifest['database']} is damaged (its sha256 differs)")
    if problems:
        raise ValueError("the backup is incomplete or damaged: " + "; ".join(problems))
    if not replace and _holds_districts():
        raise FileExistsError("the database already holds districts; --replace to overwrite")
    database.load(source / manifest["database"])
    files.copy_in(source / "files", manifest, replace)
    count = len(manifest["files"]) + len(manifest["links"]) + len(manifest.get("stored", {}))
    return Summary(manifest["engine"], manifest["uploads"], count, manifest["missing"])


def read_manifest(source: Path) -> dict:
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(f"{source} is not a rosterdrop backup (no {MANIFEST})") from None
    if manifest.get("rosterdrop_backup") != FORMAT:
        raise ValueError(f"{source} was made by another version of rosterdrop backup")
    return manifest


def _holds_districts() -> bool:
    try:
        return District.objects.exists()
    except DatabaseError:  # no tables yet: a fresh database
        connection.close()
        return False
