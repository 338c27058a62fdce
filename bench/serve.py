"""Times serving a district already imported (bench/run.py leaves one): a OneRoster REST page
of 10,000 enrollments, a `dateLastModified` filter returning 1,000 records, and the OneRoster
1.2 CSV export next to the sqlite3 CLI's own CSV output of the same roster tables.

    ROSTERDROP_DATA_DIR=... .venv/bin/python bench/serve.py SLUG [--json]

Run it with the settings of the import it follows (ROSTERDROP_DATA_DIR, and
ROSTERDROP_DATABASE_URL for PostgreSQL; the sqlite3 floor is measured on SQLite only).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("district")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    os.environ.setdefault("ROSTERDROP_ONEROSTER_RATE_LIMIT", "0")
    import django

    django.setup()
    from django.conf import settings
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
    figures["enrollments"] = MODELS["enrollments"].objects.filter(district=district).count()

    seconds, answer = timed(lambda: app.get(f"{base}/enrollments?limit=10000&offset=10000"))
    assert answer.status_code == 200, answer.content[:300]
    figures["page_10000_enrollments_s"] = round(seconds, 3)

    # Records the latest sync changed, by the time of the sync before it.
    syncs = list(Sync.objects.filter(district=district).exclude(finished_at=None).order_by("pk"))
    since = syncs[-2].finished_at if len(syncs) > 1 else syncs[0].started_at
    stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    query = {"filter": f"dateLastModified>'{stamp}'", "limit": 1000}
    seconds, answer = timed(lambda: app.get(f"{base}/enrollments", query))
    assert answer.status_code == 200, answer.content[:300]
    figures["filter_dateLastModified_1000_s"] = round(seconds, 3)
    figures["filter_dateLastModified_total"] = int(answer["X-Total-Count"])

    with tempfile.TemporaryDirectory() as work:
        package = Path(work) / "export.zip"
        with package.open("wb") as out:
            seconds, _ = timed(lambda: write_package(district, out))
        figures["export_s"] = round(seconds, 3)
        figures["export_bytes"] = package.stat().st_size
        if connection.vendor == "sqlite":
            db = settings.DATABASES["default"]["NAME"]
            script = "".join(
                f".once {work}/{t.entity}.csv\nSELECT * FROM "
                f"{MODELS[t.entity]._meta.db_table} WHERE district_id = {district.pk};\n"
                for t in TABLES
            )
            command = ["sqlite3", "-csv", "-header", str(db)]
            seconds, _ = timed(lambda: subprocess.run(command, input=script, text=True, check=True))
            figures["sqlite3_csv_s"] = round(seconds, 3)
            figures["export_vs_sqlite3"] = round(figures["export_s"] / seconds, 2)
    if args.json:
        json.dump(figures, sys.stdout, indent=2)
        print()
        return
    for name, value in figures.items():
        print(f"{name:34} {value}")


if __name__ == "__main__":
    main()
