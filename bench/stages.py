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

`--rss-every SECONDS` also samples the process's memory in a thread (VmRSS, its anonymous and
file-backed parts, what pyarrow's pool and the C library's malloc hold) and prints, at the end,
the highest sample with the stage and file being read at that moment: what to look at when the
peak moves between runs of the same code (`--rss-log FILE` keeps every sample).

`--fresh-from TEMPLATE` (PostgreSQL) runs the import in a child process against a new database
made from TEMPLATE (`CREATE DATABASE ... TEMPLATE`: e.g. migrated, with the district added)
and a new data folder inside ROSTERDROP_DATA_DIR, both removed after: the same state for each
run of an A B B A. It prints the child's CPU (user, system) and peak RSS from `wait4`, and the
server's CPU: every backend and parallel worker of that database, read from /proc every 0.1 s
(a process's last reading is what it spent; one that lived under 0.1 s may be missed).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

START = time.perf_counter()
SUMS: Counter[str] = Counter()
# The last stage that ended, and the file being read with its rows so far: a sample's place.
NOW = {"stage": "start", "file": ""}


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


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> tuple[int, int]:
    """(bytes glibc's malloc holds in its heaps and mmaps, of which free), or (0, 0)."""
    call = getattr(ctypes.CDLL(None), "mallinfo2", None)
    if call is None:
        return 0, 0
    call.restype = _Mallinfo2
    info = call()
    return info.arena + info.hblkhd, info.fordblks


def sample(every: float, out: TextIO | None, peak: dict[str, str | int]) -> None:
    """Sample memory every `every` seconds until the process ends; keep the highest sample."""
    import pyarrow as pa

    while True:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) // 1024
        held, free = _mallinfo()
        row: dict[str, str | int] = {
            "t": f"{time.perf_counter() - START:.1f}",
            **fields,
            "arrow": pa.total_allocated_bytes() >> 20,
            "malloc": held >> 20,
            "malloc_free": free >> 20,
            "after": NOW["stage"],
            "reading": NOW["file"],
        }
        if out is not None:
            print(" ".join(f"{k}={v}" for k, v in row.items()), file=out, flush=True)
        if int(row["VmRSS"]) > int(peak.get("VmRSS", 0)):
            peak.clear()
            peak.update(row)
        time.sleep(every)


def read_so_far(file: str, rows: int) -> None:
    NOW["file"] = f"{file} {rows}"


def report(label: str, seconds: float, batch: bool) -> None:
    """A whole-import stage's call printed as it ends; a per-batch step's added up."""
    NOW["stage"] = label
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
    parser.add_argument(
        "--rss-every", type=float, default=0.0, help="sample memory every SECONDS (e.g. 0.2)"
    )
    parser.add_argument("--rss-log", type=Path, help="with --rss-every: every sample, to FILE")
    parser.add_argument(
        "--fresh-from", metavar="TEMPLATE", help="PostgreSQL: in a new copy of database TEMPLATE"
    )
    args = parser.parse_args()
    if args.fresh_from:
        argv = [str(args.path), "--district", args.district]
        argv += ["--dry-run"] if args.dry_run else []
        argv += ["--rss-every", str(args.rss_every)] if args.rss_every else []
        argv += ["--rss-log", str(args.rss_log)] if args.rss_log else []
        return fresh(args.fresh_from, [sys.executable, __file__, *argv])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    import django

    django.setup()
    from rosterdrop import timing
    from rosterdrop.districts.models import District
    from rosterdrop.ingest import syncs

    timing.listen(report)
    peak: dict[str, str | int] = {}
    if args.rss_every:
        out = args.rss_log.open("w") if args.rss_log else None
        sampler = threading.Thread(target=sample, args=(args.rss_every, out, peak), daemon=True)
        sampler.start()
    district = District.objects.get(slug=args.district)
    sync = syncs.import_path(district, args.path, dry_run=args.dry_run, progress=read_so_far)
    total = time.perf_counter() - START
    cpu = sum(os.times()[:2])
    print(f"{total:7.1f} {sync.status}  {memory()} cpu {cpu:.1f} s{server_cpu()}", file=sys.stderr)
    for label, seconds in SUMS.items():
        print(f"        {label:20} {seconds:7.2f} s (summed)", file=sys.stderr)
    if peak:
        print("highest sample: " + " ".join(f"{k}={v}" for k, v in peak.items()), file=sys.stderr)
    return 0


def _cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def fresh(template: str, argv: list[str]) -> int:
    """Run `argv` (this script without --fresh-from) against a new copy of `template`."""
    import shutil
    import subprocess
    import tempfile

    import psycopg
    from psycopg import sql

    url = urlsplit(os.environ["ROSTERDROP_DATABASE_URL"])
    name = f"{template}_run{os.getpid()}"
    data = tempfile.mkdtemp(prefix="stages-", dir=os.environ.get("ROSTERDROP_DATA_DIR"))
    env = {**os.environ, "ROSTERDROP_DATA_DIR": data}
    env["ROSTERDROP_DATABASE_URL"] = urlunsplit(url._replace(path=f"/{name}"))
    admin = psycopg.connect(urlunsplit(url._replace(path="/postgres")), autocommit=True)
    admin.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    )
    load, start = os.getloadavg()[0], time.perf_counter()
    spent: dict[int, tuple[str, float]] = {}  # server pid -> (backend type, CPU seconds)
    try:
        child = subprocess.Popen(argv, env=env)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            rows = admin.execute(
                "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = %s", [name]
            ).fetchall()
            for server, kind in rows:
                seconds = _cpu(server)
                if seconds is not None:
                    spent[server] = (kind, seconds)
            time.sleep(0.1)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        workers = sum(s for kind, s in spent.values() if kind == "parallel worker")
        server = sum(s for _, s in spent.values())
        print(
            f"fresh {name}: exit {child.returncode}, {wall:.1f} s wall, load "
            f"{load:.1f} -> {os.getloadavg()[0]:.1f}; client cpu "
            f"{usage.ru_utime + usage.ru_stime:.1f} s (user {usage.ru_utime:.1f}, sys "
            f"{usage.ru_stime:.1f}), peak {usage.ru_maxrss // 1024} MB; server cpu "
            f"{server:.1f} s (backends {server - workers:.1f}, parallel workers {workers:.1f})",
            file=sys.stderr,
        )
        return child.returncode
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
