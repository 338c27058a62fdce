"""What a long-running worker keeps after an import: the memory an import freed goes back to
the system (ingest/memory.py), not only to the C library's malloc, which would keep it resident
until the next import. Measured in a fresh process of its own, on SQLite: its page cache is
handed back to malloc as the applying transaction ends (roster/store.py, REWRITE_CACHE_KB)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROSTERDROP = str(Path(sys.executable).with_name("rosterdrop"))
GEN = Path(__file__).resolve().parents[1] / "bench" / "gen.py"
SMALL = Path(__file__).resolve().parent / "samples" / "oneroster11-generated" / "school-small"

# Imports a small district first (the modules and pools an import loads stay, rightly), then
# a district of 20,000 students, and prints how much more anonymous memory the process holds.
MEASURE = """
from pathlib import Path
from rosterdrop.districts.models import District
from rosterdrop.ingest.syncs import import_path

def anonymous_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024

warm = District.objects.create(slug="warm", name="Warm", format="oneroster-1.1")
import_path(warm, Path({small!r}))
district = District.objects.create(slug="big", name="Big", format="oneroster-1.1")
before = anonymous_mb()
assert import_path(district, Path({big!r})).status == "applied"
print(anonymous_mb() - before)
"""


def test_an_import_gives_back_what_it_freed(tmp_path, migrated_data):
    """20,000 students (~200k records): the process held ~134 MB more after the import when
    the freed memory stayed with malloc, ~21 MB more since it is given back."""
    big = tmp_path / "district"
    sizes = ["--students=20000", "--seed=3"]
    subprocess.run([sys.executable, str(GEN), str(big), *sizes], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTERDROP_")}
    shutil.copytree(migrated_data, tmp_path / "data")
    env["ROSTERDROP_DATA_DIR"] = str(tmp_path / "data")
    code = MEASURE.format(small=str(SMALL), big=str(big))
    result = subprocess.run(
        [ROSTERDROP, "shell", "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    held_mb = int(result.stdout.strip().splitlines()[-1])
    assert held_mb < 70, f"the process holds {held_mb} MB more after the import"
