"""Throughput of the deployment at scale next to the embedded default (bench/README.md).

cluster: tests/test_cluster.py (HAProxy, two `serve --no-worker`, two `rosterdrop worker`,
PostgreSQL, moto S3) writes its figures to a file; single: one plain `rosterdrop serve` on
SQLite and the data folder (front end and worker thread in one process), the same 55 districts
uploading the same zip at once with OpenSSH sftp from addresses of their own. Both report
aggregate upload MB/s (all bytes over the wall time until the last client finished) and
imports per minute (districts over the time until the last import finished), with the load.

    .venv/bin/python bench/cluster.py [--only single|cluster]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCHOOL_SMALL = ROOT / "tests" / "samples" / "oneroster11-generated" / "school-small"
sys.path.insert(0, str(ROOT / "tests"))
from district_logins import district_logins  # noqa: E402  (tests/: the deployments' setup)

DISTRICTS = [f"s{n:02d}" for n in range(1, 56)]


def cpu_seconds() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def single(work: Path) -> dict:
    work.mkdir(parents=True)
    data = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTERDROP_")}
    env.update(ROSTERDROP_DATA_DIR=str(data), ROSTERDROP_SFTP_LOGIN_DELAY="0.2")
    rd = str(BIN / "rosterdrop")
    key = work / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    run = dict(env=env, check=True, capture_output=True, timeout=600)
    subprocess.run([rd, "migrate", "-v0"], **run)
    subprocess.run([rd, "shell", "-c", district_logins(DISTRICTS, key.with_suffix(".pub"))], **run)
    pub = subprocess.run([rd, "hostkey", "--public"], **run, text=True).stdout.splitlines()[0]
    port = 22000 + os.getpid() % 1000
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {pub}\n")
    roster = work / "roster.zip"
    with zipfile.ZipFile(roster, "w") as z:
        for f in sorted(SCHOOL_SMALL.iterdir()):
            z.write(f, f.name)
    serve = subprocess.Popen(
        [rd, "serve", "--no-demo", "--no-ftps", "--host", "127.0.0.1", "--sftp-port", str(port),
         "--web-port", str(port + 1)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert serve.stdout is not None
    while "Ready." not in serve.stdout.readline():
        assert serve.poll() is None
    try:

        def send(i_slug: tuple[int, str]) -> int:
            i, slug = i_slug
            cmd = ["sftp", "-b", "-", "-P", str(port), "-i", str(key),
                   "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", f"BindAddress=127.0.1.{i + 1}", "-o", f"UserKnownHostsFile={known}",
                   f"{slug}@127.0.0.1"]  # fmt: skip
            done = subprocess.run(
                cmd, input=f"put {roster} roster.zip\n", capture_output=True, text=True
            )
            return done.returncode

        began = time.monotonic()
        with ThreadPoolExecutor(len(DISTRICTS)) as pool:
            codes = list(pool.map(send, enumerate(DISTRICTS)))
        uploaded = time.monotonic() - began
        assert codes == [0] * len(DISTRICTS), codes
        db = data / "rosterdrop.sqlite3"
        query = "select count(*) from ingest_sync where status = 'applied'"
        while int(subprocess.run(["sqlite3", db, query], capture_output=True, text=True)
                  .stdout or 0) < len(DISTRICTS):  # fmt: skip
            time.sleep(0.5)
        imported = time.monotonic() - began
    finally:
        serve.terminate()
        serve.wait(60)
    size = roster.stat().st_size * len(DISTRICTS)
    return {
        "districts": len(DISTRICTS),
        "bytes": size,
        "upload_seconds": round(uploaded, 2),
        "upload_mb_per_s": round(size / uploaded / 1e6, 2),
        "imports_per_minute": round(len(DISTRICTS) / imported * 60, 1),
        "load": os.getloadavg(),
    }


def cluster(work: Path) -> dict:
    work.mkdir(parents=True)
    figures = work / "cluster.json"
    env = {**os.environ, "ROSTERDROP_CLUSTER_FIGURES": str(figures)}
    subprocess.run(
        [str(BIN / "pytest"), "tests/test_cluster.py", "-q", "-x"], cwd=ROOT, env=env, check=True
    )
    return json.loads(figures.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["single", "cluster"])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("single", single), ("cluster", cluster)):
            if args.only in (None, name):
                before = cpu_seconds()
                results[name] = fn(Path(tmp) / name) | {"cpu_seconds": None}
                results[name]["cpu_seconds"] = round(cpu_seconds() - before, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
