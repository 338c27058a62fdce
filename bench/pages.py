"""Times the console's data pages on a generated district: the data assistant, "why is X" (a
student, a class, an unknown ID), SIS search and a held sync's summary, each as the median of
N requests through Django's test client, with the CPU seconds they took and the load.

    .venv/bin/python bench/pages.py --size huge [--db sqlite|postgresql] [--repeat 5] [--json]
    .venv/bin/python bench/pages.py --size huge --reuse      # time the pages only, no import

It imports the district (bench/run.py's generated `base`), then the 1% change copy with the
district's removal threshold at 0.5%, so that the second sync is held; the pages then read the
roster, the held sync and its files as a district admin would see them. Run `huge` under
`flock /work/coord/bench.lock` (see PROTOCOL): its imports take minutes and GBs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (bench/run.py: the generated districts, children, PostgreSQL)

SLUG = "bench"


def setup(size: str, db: str, workdir: Path, python: str) -> dict[str, str]:
    """A fresh data folder (and database) with the district imported and its change held."""
    base, change, _ = run.ensure_data(workdir, size, 1, python, workdir / size / "pages-logs")
    data = workdir / size / f"pages-{db}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = {**os.environ, "ROSTERDROP_DATA_DIR": str(data)}
    if db == "postgresql":
        url = run.pg_base_url()
        if url is None:
            raise SystemExit("no PostgreSQL server")
        name = f"rosterdrop_pages_{size}"
        run.pg_admin(url, f"DROP DATABASE IF EXISTS {name}")
        run.pg_admin(url, f"CREATE DATABASE {name}")
        env["ROSTERDROP_DATABASE_URL"] = run.with_database(url, name)
    cli = run.rosterdrop_argv(python)
    assert cli, "no rosterdrop command"
    logs = workdir / size / "pages-logs" / db
    steps = [
        ("migrate", ["migrate", "--no-input"]),
        # The first import removes nothing; the change's 1% removals pass 0.5%: held.
        (
            "district",
            [
                "district",
                "add",
                SLUG,
                "--name",
                "Bench",
                "--format",
                "oneroster-1.1",
                "--removal-threshold",
                "0.005",
            ],
        ),
        ("first", ["import", str(base), "--district", SLUG, "--json"]),
        ("change", ["import", str(change), "--district", SLUG, "--json"]),
        # As serve's worker builds it after each sync: SIS search answers from it.
        ("index", ["search-index", "build", "--district", SLUG]),
    ]
    for name, argv in steps:
        child = run.run_child(cli + argv, env=env, logs=logs, name=name)
        run.log(f"{name}: {child.seconds:.1f} s, cpu {child.cpu_seconds} s, rc {child.returncode}")
        if child.returncode:
            raise SystemExit(f"{name} failed:\n{child.stderr[-3000:]}")
    return env


def medians(call, repeat: int) -> tuple[object, dict]:
    """The last answer of `call` and the median wall and CPU seconds (and the slowest) of
    `repeat` calls after one untimed warm-up."""
    answer = call()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        answer = call()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return answer, {
        "median_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpus), 3),
    }


def timed(client, url: str, repeat: int) -> dict:
    """`medians` of GETs of `url`, and the answer's status: a page that fails (500) is timed
    all the same."""
    answer, figures = medians(lambda: client.get(url), repeat)
    return {"url": url, "status": answer.status_code, **figures, "bytes": len(answer.content)}


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every page benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=run.SIZES, default="small")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workdir", type=Path, default=BENCH / ".data")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    return parser


def measure(repeat: int, only: list[str] | None = None) -> dict:
    """Each page's figures, in this process (Django set up from the environment)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from rosterdrop.districts.models import District
    from rosterdrop.ingest.models import Sync
    from rosterdrop.roster.models import records

    district = District.objects.get(slug=SLUG)
    user, _ = get_user_model().objects.get_or_create(
        username="bench-pages", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client(raise_request_exception=False)
    client.force_login(user)
    held = Sync.objects.filter(district=district, status="held").latest("pk")
    student = records(district, "roles").filter(role="student").order_by("pk")[1000]
    klass = records(district, "classes").order_by("pk")[500]
    person = records(district, "users").get(sourced_id=student.userSourcedId)
    users_csv = district.uploads.filter(filename="users.csv").latest("pk")
    prefix = f"/d/{SLUG}"
    pages = {
        "assistant": f"{prefix}/assistant/",
        "why_student": f"{prefix}/assistant/why/?id={student.userSourcedId}",
        "why_class": f"{prefix}/assistant/why/?id={klass.sourced_id}",
        "why_unknown": f"{prefix}/assistant/why/?id=no-such-id",
        "sis_search_name": f"{prefix}/sis/?upload={users_csv.pk}&file=users.csv"
        f"&q={person.familyName}",
        "sis_search_id": f"{prefix}/sis/?upload={users_csv.pk}&file=users.csv"
        f"&q={student.userSourcedId}",
        "hold_summary": f"{prefix}/syncs/{held.pk}/",
    }
    figures: dict = {"engine": connection.vendor, "load_start": os.getloadavg()}
    cpu = time.process_time()
    for name, url in pages.items():
        if only and name not in only:
            continue
        figures[name] = timed(client, url, repeat)
        run.log(f"{name}: median {figures[name]['median_s']} s, {figures[name]['status']}")
    figures["cpu_s"] = round(time.process_time() - cpu, 2)
    figures["load_end"] = os.getloadavg()
    return figures


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="time an earlier run's import")
    parser.add_argument("--data", type=Path, help="its data folder (default SIZE/pages-DB)")
    parser.add_argument("--pages", nargs="+", help="time only these (default: all)")
    args = parser.parse_args()
    data = args.data or args.workdir / args.size / f"pages-{args.db}"
    if args.reuse:
        os.environ["ROSTERDROP_DATA_DIR"] = str(data)
        if args.db == "postgresql":
            url = run.pg_base_url() or ""
            os.environ["ROSTERDROP_DATABASE_URL"] = run.with_database(
                url, f"rosterdrop_pages_{args.size}"
            )
    else:
        os.environ.update(setup(args.size, args.db, args.workdir, sys.executable))
    figures = {"size": args.size, "repeat": args.repeat, **measure(args.repeat, args.pages)}
    (data / "pages.json").write_text(json.dumps(figures, indent=2))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for name, value in figures.items():
        shown = (
            value
            if not isinstance(value, dict)
            else (
                f"{value['median_s']:.3f} s median (max {value['max_s']:.3f}, "
                f"cpu {value['cpu_median_s']:.3f} s)"
            )
        )
        print(f"{name:18} {shown}")


if __name__ == "__main__":
    main()
