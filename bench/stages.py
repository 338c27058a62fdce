"""Where one import spends its time and memory, stage by stage.

    ROSTERDROP_DATA_DIR=... ROSTERDROP_DATABASE_URL=... \
        python bench/stages.py PATH --district SLUG

Runs `import_path` in this process, listening to the stages the code marks with
`rosterdrop.timing.timed`: each call of a whole-import stage prints its seconds and the
process's RSS and peak RSS (MB) as it ends; the per-batch steps are summed and printed at the
end. Point it at a copy of a benchmark run's data (bench/.data/SIZE/run/DB) to see what
`run.py`'s totals are made of. Each line also shows the CPU seconds this process spent so
far and, on PostgreSQL, those the server spent so far for this import's connection (its
backend process, read from /proc: the server runs on this machine). Listening costs a few
microseconds per call: fine for batches, not for a per-row profile (use py-spy).
"""

from __future__ import annotations

import argparse
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


def server_cpu() -> str:
    """User+system CPU seconds of the PostgreSQL backend serving Django's connection, or ""."""
    from django.db import connection

    if connection.vendor != "postgresql" or connection.connection is None:
        return ""
    try:
        stat = Path(f"/proc/{connection.connection.info.backend_pid}/stat").read_text()
    except OSError:
        return ""
    utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
    return f" server cpu {(int(utime) + int(stime)) / os.sysconf('SC_CLK_TCK'):.1f} s"


def report(label: str, seconds: float, batch: bool) -> None:
    """A whole-import stage's call printed as it ends; a per-batch step's added up."""
    if batch:
        SUMS[label] += seconds
        return
    now, cpu = time.perf_counter(), sum(os.times()[:2])
    line = (
        f"{now - START:7.1f} {label:20} {seconds:7.2f} s  {memory()} cpu {cpu:.1f} s{server_cpu()}"
    )
    print(line, file=sys.stderr)


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
    from rosterdrop import timing
    from rosterdrop.districts.models import District
    from rosterdrop.ingest import syncs

    timing.listen(report)
    district = District.objects.get(slug=args.district)
    sync = syncs.import_path(district, args.path, dry_run=args.dry_run)
    total = time.perf_counter() - START
    cpu = sum(os.times()[:2])
    print(f"{total:7.1f} {sync.status}  {memory()} cpu {cpu:.1f} s{server_cpu()}", file=sys.stderr)
    for label, seconds in SUMS.items():
        print(f"        {label:20} {seconds:7.2f} s (summed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
