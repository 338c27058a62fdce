"""Where one import spends its time and memory, stage by stage.

    ROSTERDROP_DATA_DIR=... ROSTERDROP_DATABASE_URL=... \
        python bench/stages.py PATH --district SLUG

Runs `import_path` in this process with the pipeline's stage functions wrapped: each call of a
whole-import stage prints its seconds and the process's RSS and peak RSS (MB) as it ends; the
per-batch stages are summed and printed at the end. Point it at a copy of a benchmark run's
data (bench/.data/SIZE/run/DB) to see what `run.py`'s totals are made of. The wrapping costs
a few microseconds per call: fine for batches, not for a per-row profile (use py-spy).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import Counter
from pathlib import Path

START = time.perf_counter()
SUMS: Counter[str] = Counter()


def memory() -> str:
    """RSS (anonymous and file-backed: mapped files count too) and peak RSS, in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    shown = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    return " ".join(f"{k} {int(fields[k].split()[0]) // 1024}" for k in shown)


def each_call(owner, name: str) -> None:
    """Print every call of owner.name as it ends."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args, **kwargs):
        began = time.perf_counter()
        result = inner(*args, **kwargs)
        now = time.perf_counter()
        print(f"{now - START:7.1f} {name:20} {now - began:7.2f} s  {memory()}", file=sys.stderr)
        return result

    setattr(owner, name, timed)


def summed(owner, name: str, label: str) -> None:
    """Add up the seconds of every call of owner.name under `label`."""
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            SUMS[label] += time.perf_counter() - began

    setattr(owner, name, timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--district", required=True)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read, check and plan without applying: repeatable, since the roster does not "
        "change and a dry run is never taken as the earlier sync of re-sent files (files a "
        "real sync already imported are still recognised: send them in other bytes)",
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    import django

    django.setup()
    from rosterdrop.districts.models import District
    from rosterdrop.inbox import store as inbox
    from rosterdrop.ingest import apply, pipeline, read, spill, validate
    from rosterdrop.roster import hashes, staging, store

    for owner, name in [
        (inbox, "receive"),
        (hashes.Snapshot, "frame"),
        (pipeline, "read_file"),
        (pipeline, "check_keys"),
        (pipeline, "plan_entity"),
        (pipeline, "apply_plan"),
        (hashes, "save"),
    ]:
        each_call(owner, name)
    for owner, name, label in [
        (read, "_fast", "read (polars)"), (read, "_strict", "read (csv module)"),
        (validate.RowChecker, "check", "validate"), (pipeline, "map_batch", "map"),
        (pipeline.EntityRows, "add", "keep keys"), (spill.Spill, "write", "spill"),
        (store, "_load", "db insert"), (store, "_update_keyed", "db update"),
        (staging, "stage", "db staged (thread)"), (store, "_insert_staged", "db insert staged"),
        (store, "old_data", "db old data"), (apply, "field_changes", "field changes"),
    ]:  # fmt: skip
        summed(owner, name, label)
    district = District.objects.get(slug=args.district)
    sync = pipeline.import_path(district, args.path, dry_run=args.dry_run)
    total = time.perf_counter() - START
    print(f"{total:7.1f} {sync.status}  {memory()}", file=sys.stderr)
    for label, seconds in SUMS.items():
        print(f"        {label:20} {seconds:7.2f} s (summed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
