"""Times SIS search on a generated district's files without importing the roster: the
index build (ingest.sent_index.keep, what it adds to an import) and the console's SIS page for
a family name and an ID in users.csv, and a student's ID (whole, and a part in upper case) in
enrollments.csv, from the index and, for comparison, reading the file as the page did before
(read_rows over the whole file): median of N requests, CPU seconds, load.

    .venv/bin/python bench/sis_search.py --size huge [--repeat 5] [--json]

It makes a fresh data folder (and SQLite database, or PostgreSQL with --db postgresql: database
search_sis_SIZE) with the district's base files stored as uploads (hard links), as
`pages.py` would after its imports; the rest of the page (the roster) is not needed here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import pages  # noqa: E402  (bench/pages.py: medians of requests, the options)
import run  # noqa: E402  (bench/run.py: the generated districts, PostgreSQL)

SLUG = "bench"


def timed(call, repeat: int) -> dict:
    """`pages.medians` of `call`, with its last answer."""
    answer, figures = pages.medians(call, repeat)
    return {**figures, "answer": answer}


def measure(base: Path, repeat: int) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from rosterdrop.districts.models import District
    from rosterdrop.formats import get_format
    from rosterdrop.inbox.models import Upload
    from rosterdrop.ingest import sent_index
    from rosterdrop.ingest.reader import limits
    from rosterdrop.ingest.sent_rows import read_rows
    from rosterdrop.web.sis import members

    call_command("migrate", verbosity=0)
    district = District.objects.create(slug=SLUG, name="Bench", format="oneroster-1.1")
    folder = settings.DATA_DIR / "inbox" / SLUG
    folder.mkdir(parents=True)
    uploads, paths = [], sorted(base.glob("*.csv"))
    for path in paths:
        (folder / path.name).hardlink_to(path)
        uploads.append(
            Upload.objects.create(
                district=district,
                filename=path.name,
                size=path.stat().st_size,
                sha256=hashlib.sha256(f"{path}:{path.stat().st_mtime}".encode()).hexdigest(),
                source="cli",
                stored_path=f"inbox/{SLUG}/{path.name}",
                status="imported",
            )
        )
    figures: dict = {"engine": connection.vendor, "load_start": os.getloadavg()}
    cpu, wall = time.process_time(), time.perf_counter()
    sent_index.keep(district, uploads, paths, get_format("oneroster-1.1", SLUG), limits())
    figures["index_build"] = {
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 2),
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }
    run.log(f"index built: {figures['index_build']}")
    with (base / "users.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        for _ in range(250_000 if "huge" in str(base) else 1000):
            row = next(reader)
    family, student = row[header.index("familyName")], row[0]
    sent = {u.filename: u for u in uploads}
    user, _ = get_user_model().objects.get_or_create(
        username="bench-sis", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client(raise_request_exception=False)
    client.force_login(user)

    def page(name: str, query: str):
        def get():
            answer = client.get(
                f"/d/{SLUG}/sis/", {"upload": sent[name].pk, "file": name, "q": query}
            )
            return answer.status_code, answer.content.count(b"<tr>") - 1

        return get

    def scan(name: str, query: str):
        def read():
            with members(sent[name]) as files:
                return read_rows(files[name], "cp1252", query, 0, 100).matched

        return read

    users, enrollments = "users.csv", "enrollments.csv"
    for name, call, times in (
        ("sis_search_name", page(users, family), repeat),
        ("sis_search_id", page(users, student), repeat),
        ("sis_search_enrollments_id", page(enrollments, student), repeat),
        ("sis_search_enrollments_part", page(enrollments, student[4:13].upper()), repeat),
        ("sis_search_name_file_read", scan(users, family), max(repeat // 2, 1)),
        ("sis_search_id_file_read", scan(users, student), max(repeat // 2, 1)),
        ("sis_search_enrollments_file_read", scan(enrollments, student), max(repeat // 2, 1)),
    ):
        figures[name] = timed(call, times)
        run.log(f"{name}: {figures[name]}")
    figures["query"] = {"family": family, "id": student}
    figures["load_end"] = os.getloadavg()
    return figures


def main() -> None:
    args = pages.arguments(__doc__.splitlines()[0]).parse_args()
    base = args.workdir / args.size / "base"
    if not base.is_dir():
        raise SystemExit(f"no {base}: generate it with bench/run.py --size {args.size}")
    data = args.workdir / args.size / f"sis-{args.db}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    os.environ["ROSTERDROP_DATA_DIR"] = str(data)
    if args.db == "postgresql":
        url = run.pg_base_url()
        if url is None:
            raise SystemExit("no PostgreSQL server")
        name = f"search_sis_{args.size}"
        run.pg_admin(url, f"DROP DATABASE IF EXISTS {name}")
        run.pg_admin(url, f"CREATE DATABASE {name}")
        os.environ["ROSTERDROP_DATABASE_URL"] = run.with_database(url, name)
    figures = {"size": args.size, "repeat": args.repeat, **measure(base, args.repeat)}
    (data / "sis.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2) if args.json else figures)


if __name__ == "__main__":
    main()
