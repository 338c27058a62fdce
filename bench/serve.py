"""Times serving a district already imported (bench/run.py or an import leaves one): OneRoster
REST pages of 10,000 enrollments (near the start and at the end: a deep offset), a
`dateLastModified` filter returning 1,000 records, and the OneRoster 1.2 CSV export next to the
sqlite3 CLI's own CSV output of the same roster tables.

    ROSTERDROP_DATA_DIR=... [ROSTERDROP_DATABASE_URL=...] .venv/bin/python bench/serve.py SLUG
        [--repeat 3] [--no-export] [--json]

Run it with the settings of the import it follows; the sqlite3 floor is measured on SQLite only
(it needs the `sqlite3` CLI). Each figure is the median of --repeat runs, in wall seconds, with
the CPU seconds of this process (and of the sqlite3 child for the floor) beside it; the load
average is recorded at start and end, since the machine is shared. The first request of a
process loads the URL configuration and the API: one untimed request comes first.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(action, repeat: int) -> tuple[dict, object]:
    """Median wall and CPU seconds of `repeat` runs of action(), and its last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3)}, (
        result
    )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("district")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-export", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    os.environ.setdefault("ROSTERDROP_ONEROSTER_RATE_LIMIT", "0")
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    from rosterdrop.districts.models import District
    from rosterdrop.ingest.models import Sync
    from rosterdrop.oneroster.clients import create_client, issue_token
    from rosterdrop.oneroster.package import TABLES, write_package
    from rosterdrop.roster.models import MODELS

    district = District.objects.get(slug=args.district)
    client, secret = create_client("bench", district, [])
    app = Client(
        headers={"Authorization": f"Bearer {issue_token(client.client_id, secret, '').token}"}
    )
    base = f"/oneroster/{district.slug}/ims/oneroster/rostering/v1p2"
    figures: dict[str, object] = {"engine": connection.vendor, "district": district.slug}
    figures["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    figures["enrollments"] = MODELS["enrollments"].objects.filter(district=district).count()
    assert app.get(f"{base}/orgs?limit=1").status_code == 200  # loads the URL configuration

    def get(path: str, params: dict | None = None, cached: bool = False):
        if not cached:
            cache.clear()  # X-Total-Count is kept per roster state: time a first request
        answer = app.get(path, params or {})
        assert answer.status_code == 200, answer.content[:300]
        return answer

    total = int(figures["enrollments"])
    for name, offset in (
        ("page_10000_enrollments", 10_000),
        ("page_10000_deepest", total - 10_000),
    ):
        figures[name], answer = timed(
            lambda o=offset: get(f"{base}/enrollments", {"limit": 10_000, "offset": o}),
            args.repeat,
        )
        assert len(answer.json()["enrollments"]) == 10_000
    figures["page_10000_next_pages"], _ = timed(
        lambda: get(f"{base}/enrollments", {"limit": 10_000, "offset": 20_000}, cached=True),
        args.repeat,
    )

    # Records the latest sync changed, by the time of the sync before it.
    syncs = list(Sync.objects.filter(district=district).exclude(finished_at=None).order_by("pk"))
    since = syncs[-2].finished_at if len(syncs) > 1 else syncs[0].started_at
    stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    query = {"filter": f"dateLastModified>'{stamp}'", "limit": 1000}
    figures["filter_dateLastModified_1000"], answer = timed(
        lambda: get(f"{base}/enrollments", query), args.repeat
    )
    assert len(answer.json()["enrollments"]) == 1000
    figures["filter_dateLastModified_total"] = int(answer["X-Total-Count"])

    if not args.no_export:
        with tempfile.TemporaryDirectory() as work:
            package = Path(work) / "export.zip"

            def export():
                with package.open("wb") as out:
                    return write_package(district, out)

            figures["export"], written = timed(export, args.repeat)
            figures["export_rows"] = sum(written.files.values())
            figures["export_bytes"] = package.stat().st_size
            if connection.vendor == "sqlite":
                db = settings.DATABASES["default"]["NAME"]
                script = "".join(
                    f".once {work}/{t.entity}.csv\nSELECT * FROM "
                    f"{MODELS[t.entity]._meta.db_table} WHERE district_id = {district.pk};\n"
                    for t in TABLES
                )
                command = ["sqlite3", "-csv", "-header", str(db)]

                def floor():
                    before = children_cpu()
                    subprocess.run(command, input=script, text=True, check=True)
                    return children_cpu() - before

                walls, cpus = [], []
                for _ in range(args.repeat):
                    wall = time.perf_counter()
                    cpus.append(floor())
                    walls.append(time.perf_counter() - wall)
                figures["sqlite3_csv"] = {
                    "s": round(statistics.median(walls), 3),
                    "cpu_s": round(statistics.median(cpus), 3),
                }
                figures["export_vs_sqlite3"] = round(
                    figures["export"]["s"] / figures["sqlite3_csv"]["s"], 2
                )
                figures["export_vs_sqlite3_cpu"] = round(
                    figures["export"]["cpu_s"] / figures["sqlite3_csv"]["cpu_s"], 2
                )
    figures["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
        return
    for name, value in figures.items():
        print(f"{name:34} {value}")


if __name__ == "__main__":
    main()
