"""Import benchmark: rosterdrop against the database's own bulk loader, on the same files.

Why: "fast" only means something next to a floor. For each database this loads a generated
OneRoster 1.1 district with the engine's own bulk path (the `sqlite3` CLI `.import`, PostgreSQL
`COPY`), then times rosterdrop's first import, a no-change re-import and a 1%-change re-import
of the same files, and reports each as a ratio to that floor with the child's peak RSS. After
each import, what `serve` and the workers build after a sync, off the import's path, is built
as a step of its own (`rosterdrop search-index build`: the lines the import's read did not keep
for the next read, and the SIS search index of its files). So the no-change re-read, after the
first import's lines were kept, is an incremental read that finds every line.

    python bench/run.py --size small|medium|large|huge [--db sqlite|postgresql|both]
                        [--workdir DIR] [--json]

Every step runs as a child process (`os.wait4` gives its own peak RSS). Progress goes to
stderr; the table and then the JSON figures go to stdout (only the JSON with --json).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA_FILES = [
    "orgs",
    "academicSessions",
    "courses",
    "classes",
    "users",
    "demographics",
    "enrollments",
]
# size name -> students; gen.py scales the rest with the ratios of the huge target
SIZES = {"small": 5_000, "medium": 50_000, "large": 200_000, "huge": 500_000}
# Issue 19's targets per database, as multiples of that database's raw floor.
TARGETS = {
    "sqlite": {"first": 1.6, "no_change": 0.5, "no_change_reread": 0.3, "change_1pct": 0.6},
    "postgresql": {"first": 2.0, "no_change": 0.5, "no_change_reread": 0.5, "change_1pct": 0.6},
}
RSS_TARGET_MB = 1500
EXPECTED_STATUS = {
    "first": "applied",
    "no_change": "no_changes",
    "no_change_reread": "no_changes",
    "change_1pct": "applied",
}
PG_BENCH_DB = "rosterdrop_bench_{size}"  # one per size: runs of two sizes do not collide
FORMAT = "oneroster-1.1"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Child:
    """One finished child process: wall time from start to exit, its CPU time and peak RSS."""

    argv: list[str]
    seconds: float
    cpu_seconds: float
    rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    logs: Path,
    name: str,
) -> Child:
    """Run `argv`, timing it with perf_counter and reading ru_maxrss from os.wait4.

    Output goes to files under `logs` (a pipe could fill and stall a child we wait for).
    """
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin.encode())
            proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(
        argv=argv,
        seconds=round(seconds, 3),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
        rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


# --- data -----------------------------------------------------------------------------------------


def ensure_data(
    workdir: Path, size: str, seed: int, python: str, logs: Path
) -> tuple[Path, Path, dict[str, Any]]:
    """Generate the district and its 1% change copy unless the same ones are already there."""
    root = workdir / size
    base, change = root / "base", root / "change"
    meta_path = root / "gen.json"
    wanted = {"students": SIZES[size], "seed": seed, "share": 0.01}
    if meta_path.exists() and base.is_dir() and change.is_dir():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == wanted:
            log(f"reusing {root}")
            meta["reused"] = True
            return base, change, meta
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    gen = str(BENCH / "gen.py")
    meta: dict[str, Any] = {"params": wanted}
    log(f"generating {size} district ({SIZES[size]:,} students) into {base}")
    child = run_child(
        [python, gen, str(base), "--students", str(SIZES[size]), "--seed", str(seed)],
        logs=logs,
        name="gen-base",
    )
    if child.returncode:
        raise SystemExit(f"gen.py failed:\n{child.stderr}")
    meta["base"] = json.loads(child.stdout)
    meta["base"].update(wall_seconds=child.seconds, rss_mb=child.rss_mb)
    log(f"generated in {child.seconds:.1f} s; making the 1% change copy")
    child = run_child(
        [python, gen, "change", str(base), str(change), "--share", "0.01", "--seed", str(seed)],
        logs=logs,
        name="gen-change",
    )
    if child.returncode:
        raise SystemExit(f"gen.py change failed:\n{child.stderr}")
    meta["change"] = json.loads(child.stdout)
    meta["change"].update(wall_seconds=child.seconds, rss_mb=child.rss_mb)
    log(f"change copy in {child.seconds:.1f} s")
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return base, change, meta


def reread_copy(base: Path) -> Path:
    """The base district again with only manifest.csv's bytes changed (CRLF line ends): the
    same records, which rosterdrop must read and compare again, since it recognises files it
    has seen byte for byte (ingest/resent.py). The data files are hard links."""
    copy = base.parent / "reread"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for path in base.iterdir():
        if path.name == "manifest.csv":
            text = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            (copy / path.name).write_bytes(text)
        else:
            (copy / path.name).hardlink_to(path)
    return copy


# --- raw floors -----------------------------------------------------------------------------------


def sqlite_floor(base: Path, db_file: Path, logs: Path) -> Child:
    """Load every data file with the sqlite3 CLI (.mode csv + .import) into a new DB file.

    Same PRAGMAs as rosterdrop's SQLite settings (WAL, synchronous=NORMAL), so the floor is the
    engine's own CSV path under the same durability.
    """
    cli = shutil.which("sqlite3")
    if cli is None:
        raise SystemExit("the sqlite3 CLI is missing: apt-get install -y sqlite3")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    lines = ["PRAGMA journal_mode=WAL;", "PRAGMA synchronous=NORMAL;", ".mode csv"]
    for name in DATA_FILES:
        path = str(base / f"{name}.csv").replace("'", "''")
        lines.append(f".import '{path}' {name}")
    script = "\n".join(lines) + "\n"
    return run_child([cli, "-bail", str(db_file)], stdin=script, logs=logs, name="sqlite-floor")


def sqlite_counts(db_file: Path) -> dict[str, int]:
    """Rows per table of the floor DB (checked after the timing, so not in the figure)."""
    import sqlite3

    with sqlite3.connect(db_file) as conn:
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in DATA_FILES}


def pg_floor_child(url: str, base: Path) -> None:
    """Child side of the PostgreSQL floor: COPY every file into TEXT tables in a new schema.

    The file bytes are streamed in 1 MB blocks into `COPY ... FROM STDIN (FORMAT csv, HEADER)`,
    so the server parses the CSV (as in docs/reference/perf-floors.md 4b). Timed up to the
    commit; the schema is dropped afterwards. Prints {"seconds": ..., "rows": {...}} on stdout.
    """
    import psycopg
    from psycopg import sql

    schema = f"bench_floor_{os.getpid()}"
    started = time.perf_counter()
    rows: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for name in DATA_FILES:
            path = base / f"{name}.csv"
            with path.open(encoding="utf-8") as fh:
                header = fh.readline().rstrip("\r\n").split(",")
            table = sql.Identifier(schema, name.lower())
            columns = sql.SQL(", ").join(
                sql.SQL("{} text").format(sql.Identifier(c)) for c in header
            )
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, columns))
            copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER)").format(table)
            with conn.cursor() as cur:
                with cur.copy(copy_sql) as copy, path.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        copy.write(block)
                rows[name] = cur.rowcount
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        conn.commit()
    print(json.dumps({"seconds": round(seconds, 3), "rows": rows, "schema": schema}))


def pg_base_url() -> str | None:
    """The first PostgreSQL URL (database `test`) that accepts a connection, or None."""
    import psycopg

    candidates = [
        os.environ.get("BENCH_PG_URL", ""),
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql://root@127.0.0.1:5432/test",
        "postgresql://127.0.0.1:5432/test",
        "postgresql:///test",
    ]
    for url in filter(None, candidates):
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


def with_database(url: str, dbname: str) -> str:
    """`url` with its database name replaced."""
    head, _, _ = url.rpartition("/")
    return f"{head}/{dbname}"


def pg_admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


# --- rosterdrop -----------------------------------------------------------------------------------


def rosterdrop_argv(python: str) -> list[str] | None:
    """How to call the CLI: the venv's console script, else `python -m rosterdrop`."""
    script = Path(python).parent / "rosterdrop"
    if script.exists():
        return [str(script)]
    if (REPO / "rosterdrop" / "__main__.py").exists() or importlib.util.find_spec("rosterdrop"):
        return [python, "-m", "rosterdrop"]
    return None


def parse_json(text: str) -> dict[str, Any] | None:
    """The import's JSON report: the whole stdout, else its last line that parses."""
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except json.JSONDecodeError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _norm(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def find_changes(report: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    """The {entity: {added, updated, removed, ...}} mapping of an import report, if any."""
    stack: list[Any] = [report]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("changes"), dict):
                return node["changes"]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def check_counts(
    report: dict[str, Any] | None,
    expected: dict[str, dict[str, int]],
    file_rows: dict[str, int],
) -> tuple[str, list[str]]:
    """Compare the report's counts with what gen.py wrote: ("ok"|"mismatch"|"?", notes).

    Checks `changes` ({entity: {added, updated, removed}}) and, when the report lists
    `files` with `rows`, the data rows read per file.
    """
    if report is None:
        return "?", ["no JSON report"]
    notes: list[str] = []
    for entry in report.get("files") or []:
        if isinstance(entry, dict) and isinstance(entry.get("rows"), int):
            stem = str(entry.get("name", "")).removesuffix(".csv")
            want = file_rows.get(stem)
            if want is not None and entry["rows"] != want:
                notes.append(f"{stem}.csv: {entry['rows']} rows read, {want} written")
    changes = find_changes(report)
    if changes is None:
        return "?", [*notes, "no 'changes' in the report"]
    by_norm = {_norm(k): v for k, v in changes.items() if isinstance(v, dict)}
    for entity, want in expected.items():
        got = by_norm.get(_norm(entity))
        if got is None:
            if any(want.values()):
                notes.append(f"{entity}: not reported")
            continue
        for key, value in want.items():
            aliases = {
                "added": ("added", "created", "inserted"),
                "updated": ("updated", "changed"),
                "removed": ("removed", "deleted"),
            }[key]
            found = next((got[a] for a in aliases if isinstance(got.get(a), int)), 0)
            if found != value:
                notes.append(f"{entity}.{key}: {found} != {value}")
    return ("mismatch" if notes else "ok"), notes


def file_rows(meta: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per step, the data rows of each file it imports (as gen.py reported them)."""
    base = dict(meta["base"]["rows"])
    change = dict(base)
    for name, fc in meta["change"].items():
        if isinstance(fc, dict) and name in DATA_FILES:
            change[name] = fc["rows_out"]
    return {"first": base, "no_change": base, "no_change_reread": base, "change_1pct": change}


def expected_counts(meta: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """Per step, the added/updated/removed rows per file that gen.py says it wrote."""
    rows = meta["base"]["rows"]
    first = {n: {"added": rows[n], "updated": 0, "removed": 0} for n in DATA_FILES}
    no_change = {n: {"added": 0, "updated": 0, "removed": 0} for n in DATA_FILES}
    change = dict(no_change)
    for name, fc in meta["change"].items():
        if isinstance(fc, dict) and name in DATA_FILES:
            change[name] = {
                "added": fc["added"],
                "updated": fc["changed"],
                "removed": fc["removed"] + fc["removed_cascade"],
            }
    return {
        "first": first,
        "no_change": no_change,
        "no_change_reread": no_change,
        "change_1pct": change,
    }


@dataclass
class Step:
    db: str
    step: str
    seconds: float | None = None
    ratio: float | None = None
    cpu_s: float | None = None  # the child's own user+sys CPU (not the PostgreSQL server's)
    rss_mb: float | None = None
    status: str | None = None
    counts: str | None = None
    target: str = ""
    verdict: str = ""
    notes: list[str] = field(default_factory=list)


def bench_database(
    db: str,
    base: Path,
    change: Path,
    meta: dict[str, Any],
    run_dir: Path,
    python: str,
    floor_only: bool = False,
) -> list[Step]:
    """Floor, then the three imports, for one database; returns one Step per line."""
    pg_db = os.environ.get("BENCH_PG_DB") or PG_BENCH_DB.format(size=run_dir.parent.name)
    logs = run_dir / "logs" / db
    shutil.rmtree(run_dir / db, ignore_errors=True)
    (run_dir / db).mkdir(parents=True)
    steps: list[Step] = []

    floor = Step(db, "raw_floor")
    steps.append(floor)
    pg_url = None
    if db == "sqlite":
        log("sqlite: raw floor (sqlite3 CLI .import)")
        db_file = run_dir / db / "floor.sqlite3"
        child = sqlite_floor(base, db_file, logs)
        loaded = sqlite_counts(db_file) if not child.returncode else {}
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        floor.target = "sqlite3 .import"
    else:
        pg_url = pg_base_url()
        if pg_url is None:
            floor.verdict, floor.notes = "SKIP", ["no PostgreSQL reachable (database 'test')"]
            return steps
        log(f"postgresql: raw floor (COPY FROM STDIN) via {pg_url}")
        argv = [python, str(Path(__file__).resolve()), "_pg_floor", pg_url, str(base)]
        child = run_child(argv, logs=logs, name="pg-floor")
        floor.target = "COPY csv"
        if not child.returncode:
            inner = json.loads(child.stdout)
            loaded = inner["rows"]
            floor.notes.append(f"in-child load+commit {inner['seconds']} s")
    if child.returncode:
        floor.verdict, floor.notes = "FAIL", [child.stderr.strip()[-500:]]
        return steps
    floor.seconds, floor.rss_mb, floor.ratio = child.seconds, child.rss_mb, 1.0
    floor.cpu_s = child.cpu_seconds
    floor.counts = "ok" if loaded == meta["base"]["rows"] else "mismatch"
    if floor.counts != "ok":
        floor.notes.append(f"rows loaded {loaded} != written {meta['base']['rows']}")
    floor.verdict = "ok" if floor.counts == "ok" else "FAIL"
    log(f"{db}: floor {floor.seconds:.2f} s")
    if floor_only:
        return steps

    cli = rosterdrop_argv(python)
    if cli is None:
        steps.append(Step(db, "first", verdict="SKIP", notes=["rosterdrop CLI not found"]))
        return steps
    env = dict(os.environ)
    data_dir = run_dir / db / "data"
    env["ROSTERDROP_DATA_DIR"] = str(data_dir)
    if db == "sqlite":
        env["ROSTERDROP_DATABASE_URL"] = f"sqlite:///{run_dir / db / 'rosterdrop.sqlite3'}"
    else:
        assert pg_url is not None
        pg_admin(pg_url, f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)")
        pg_admin(pg_url, f"CREATE DATABASE {pg_db}")
        env["ROSTERDROP_DATABASE_URL"] = with_database(pg_url, pg_db)
    try:
        steps.extend(_imports(db, cli, env, base, change, meta, logs, floor))
    finally:
        if pg_url is not None:
            pg_admin(pg_url, f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)")
    return steps


def _imports(
    db: str,
    cli: list[str],
    env: dict[str, str],
    base: Path,
    change: Path,
    meta: dict[str, Any],
    logs: Path,
    floor: Step,
) -> list[Step]:
    """migrate, district add, then the timed imports (stops at the first failure)."""
    steps: list[Step] = []
    setup = Step(db, "setup")
    steps.append(setup)
    for name, args in (
        ("migrate", ["migrate", "--no-input"]),
        ("district-add", ["district", "add", "bench", "--name", "Bench", "--format", FORMAT]),
    ):
        child = run_child([*cli, *args], env=env, logs=logs, name=name)
        if child.returncode:
            setup.verdict = "FAIL"
            setup.notes.append(f"{name}: exit {child.returncode}: {child.stderr.strip()[-400:]}")
            return steps
        setup.notes.append(f"{name} {child.seconds:.1f} s")
    setup.verdict = "ok"

    expected, rows = expected_counts(meta), file_rows(meta)
    steps_and_folders = (
        ("first", base),
        ("no_change", base),
        ("no_change_reread", reread_copy(base)),
        ("change_1pct", change),
    )
    for step, folder in steps_and_folders:
        s = Step(db, step, target=f"<= {TARGETS[db][step]}x, RSS <= {RSS_TARGET_MB} MB")
        steps.append(s)
        log(f"{db}: import {step} ({folder.name})")
        argv = [*cli, "import", str(folder), "--district", "bench", "--json"]
        child = run_child(argv, env=env, logs=logs, name=f"import-{step}")
        s.seconds, s.rss_mb, s.cpu_s = child.seconds, child.rss_mb, child.cpu_seconds
        s.ratio = round(child.seconds / floor.seconds, 2) if floor.seconds else None
        report = parse_json(child.stdout)
        s.status = str(report.get("status")) if report else None
        s.counts, notes = check_counts(report, expected[step], rows[step])
        s.notes.extend(notes[:8])
        if child.returncode:
            s.notes.insert(0, f"exit {child.returncode}: {child.stderr.strip()[-400:]}")
        fast = s.ratio is not None and s.ratio <= TARGETS[db][step] and s.rss_mb <= RSS_TARGET_MB
        right_status = s.status == EXPECTED_STATUS[step] and not child.returncode
        right = right_status and s.counts != "mismatch"
        s.verdict = ("PASS" if fast else "MISS") if right else "FAIL"
        if not right_status:
            s.notes.insert(0, f"status {s.status!r}, expected {EXPECTED_STATUS[step]!r}")
        log(f"{db}: {step} {s.seconds:.2f} s ({s.ratio}x), {s.rss_mb} MB, {s.status}")
        if child.returncode:
            break
        steps.append(_after(db, cli, env, logs, floor, step))
    return steps


def _after(
    db: str, cli: list[str], env: dict[str, str], logs: Path, floor: Step, after: str
) -> Step:
    """What is built after the import just timed, as `serve` or a worker builds it after the
    sync (`rosterdrop import` does not: ingest/index_builds.py): the lines its read did not keep
    (ingest/line_builds.py: a first import's, for the next read) and the SIS search index, each
    part's seconds in the notes. Its own step, so that the import's figure is what a district
    waits for and this one's what follows."""
    s = Step(db, f"{after}_after", target="(none: after the sync)")
    log(f"{db}: kept lines and search index after {after}")
    argv = [*cli, "search-index", "build", "--district", "bench"]
    child = run_child(argv, env=env, logs=logs, name=f"index-{after}")
    s.seconds, s.rss_mb, s.cpu_s = child.seconds, child.rss_mb, child.cpu_seconds
    s.ratio = round(child.seconds / floor.seconds, 2) if floor.seconds else None
    s.status = "built" if not child.returncode else None
    s.notes.extend(child.stdout.strip().splitlines()[-1:])  # the syncs built, and in how long
    s.verdict = "ok" if not child.returncode else "FAIL"
    if child.returncode:
        s.notes.insert(0, f"exit {child.returncode}: {child.stderr.strip()[-400:]}")
    log(f"{db}: after {after} {s.seconds:.2f} s, cpu {s.cpu_s} s, {s.rss_mb} MB")
    return s


def table(steps: list[Step]) -> str:
    """A plain-text table of the steps."""
    head = ["db", "step", "seconds", "x floor", "cpu s", "peak MB", "status", "counts"]
    head += ["target", "verdict"]
    body = [
        [
            s.db,
            s.step,
            "" if s.seconds is None else f"{s.seconds:.2f}",
            "" if s.ratio is None else f"{s.ratio:.2f}",
            "" if s.cpu_s is None else f"{s.cpu_s:.1f}",
            "" if s.rss_mb is None else f"{s.rss_mb:.0f}",
            s.status or "",
            s.counts or "",
            s.target,
            s.verdict,
        ]
        for s in steps
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {s.db}/{s.step}: {n}" for s in steps for n in s.notes]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def venv_python() -> str:
    """The project's venv interpreter when there is one (it has psycopg and rosterdrop)."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_pg_floor"]:
        pg_floor_child(argv[1], Path(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="small")
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--workdir", type=Path, default=BENCH / ".data")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--floor-only", action="store_true", help="skip the rosterdrop imports")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    a = p.parse_args(argv)

    python = venv_python()
    workdir = a.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lock = (workdir / f".lock-{a.size}").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"another run.py --size {a.size} is running on {workdir}") from None
    loadavg_start = os.getloadavg()
    run_dir = workdir / a.size / "run"
    base, change, meta = ensure_data(workdir, a.size, a.seed, python, run_dir / "logs")
    dbs = ["sqlite", "postgresql"] if a.db == "both" else [a.db]
    steps: list[Step] = []
    for db in dbs:
        steps.extend(bench_database(db, base, change, meta, run_dir, python, a.floor_only))
    result = {
        "size": a.size,
        "counts": meta["base"]["rows"],
        "generation": {
            "reused": meta["reused"],
            "base_seconds": meta["base"].get("wall_seconds"),
            "change_seconds": meta["change"].get("wall_seconds"),
        },
        "targets": {**{db: TARGETS[db] for db in dbs}, "rss_mb": RSS_TARGET_MB},
        "machine": {
            "loadavg_1_5_15_start": [round(x, 2) for x in loadavg_start],
            "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "steps": [asdict(s) for s in steps],
    }
    # A new file renamed over the old one, never written in place: a workdir made with
    # `cp -al` shares its files with the district it was copied from.
    last = workdir / a.size / "last-run.json"
    last.with_suffix(".tmp").write_text(json.dumps(result, indent=2))
    last.with_suffix(".tmp").replace(last)
    if not a.json:
        print(table(steps))
        print()
    print(json.dumps(result, indent=2))
    return 1 if any(s.verdict == "FAIL" for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
