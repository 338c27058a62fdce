"""The web upload's "Check only": the district's import checks on the chosen files, with the
issue table, and nothing kept or applied (as `rosterdrop validate PATH --district SLUG`)."""

import shutil
from pathlib import Path

from django.shortcuts import render

from rosterdrop import process
from rosterdrop.ingest.district_check import check_for_district
from rosterdrop.ingest.engine import tmp_dir


def check_only(request, district, files) -> object:
    work = process.mkdtemp("check-", tmp_dir())
    try:
        paths = []
        for f in files:
            path = work / Path(f.name).name  # browsers may send a path; the name matches
            with path.open("wb") as out:
                for chunk in f.chunks():
                    out.write(chunk)
            paths.append(path)
        checked = check_for_district(paths, district)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    issues = checked.log.all()
    return render(
        request,
        "web/check.html",
        {
            "district": district,
            "checked": checked,
            "issues": issues,
            "fatal": checked.fatal,
            "errors": sum(i.severity == "error" for i in issues),
            "names": [Path(f.name).name for f in files],
        },
    )
