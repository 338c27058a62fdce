"""Upload rates over SFTP: rosterdrop's server next to OpenSSH's internal-sftp, same client, same
file (bench/README.md, "Uploads").

Starts `rosterdrop serve` on loopback (SQLite, a temporary data folder) and an sshd of its own
(`Subsystem sftp internal-sftp`, a config file in the temporary folder, loopback port), then
times with OpenSSH's `sftp` client: one stream of a large file, and N concurrent uploads of a
smaller one (each its own `sftp` process and connection; for rosterdrop, each its own district,
so that no upload is a hard link to another's bytes). Every run gets a fresh district (or target
name), so nothing is recognised as sent before.

Figures: MB/s (bytes over the wall time from the first client's start to the last one's exit),
the server's CPU seconds over the run (its own plus reaped children's: OpenSSH forks per
connection; and rosterdrop's SFTP worker processes', `--processes`), the clients' CPU seconds,
and the load average. Needs /usr/sbin/sshd
(`apt-get install -y openssh-server`; sshd runs as root with its own config, nothing else of
the system's ssh is touched).

    .venv/bin/python bench/upload.py [--file PATH | --size-mb 1024] [--concurrent 100]
        [--each-mb 20] [--repeat 3] [--only rosterdrop|openssh] [--processes 1 2 3]
        [--profile OUT.txt]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HUGE = Path("/work/bench-data/huge/base/enrollments.csv")
SSHD = Path("/usr/sbin/sshd")
TICK = os.sysconf("SC_CLK_TCK")
SETUP = """
from rosterdrop.districts.models import District
from rosterdrop.intake.models import Login
key = open({key!r}).read()
for slug in {slugs!r}:
    d = District.objects.create(slug=slug, name=slug, format="oneroster-1.1",
                                quiet_period_seconds=86400)
    login = Login(district=d, name=slug)
    login.add_public_key(key)
    login.save()
"""
SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {work}/host_key
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 400
MaxSessions 10
Subsystem sftp internal-sftp
"""


def tree(pid: int) -> list[int]:
    """A process and its live descendants (rosterdrop's SFTP worker processes)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # ended meanwhile
        return []
    return [pid, *(p for child in children for p in tree(int(child)))]


def _ticks(path: str, fields: slice) -> float:
    try:
        stat = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in stat[fields]) / TICK


def cpu_of(pid: int) -> float:
    """CPU seconds so far of a process and its live descendants, each its own and its reaped
    children's (OpenSSH's per-connection processes)."""
    return sum(_ticks(f"/proc/{p}/stat", slice(11, 15)) for p in tree(pid))


def system_cpu_of(pid: int) -> float:
    """The system (kernel) part of `cpu_of`: on this machine kind it moves by ~1.5 s per 906 MB
    written with the pages the kernel hands out, whatever the server (bench/README.md, the
    fifteenth stop's end section), so a change in the server's own code shows in the rest."""
    return sum(_ticks(f"/proc/{p}/stat", slice(12, 15, 2)) for p in tree(pid))  # stime, cstime


def main_thread_cpu(pid: int) -> float:
    """The CPU seconds of the first threads alone of a process and its live descendants
    (rosterdrop's event loops: the acceptor's and each SFTP worker process's)."""
    return sum(_ticks(f"/proc/{p}/task/{p}/stat", slice(11, 13)) for p in tree(pid))


def own_cpu(pid: int) -> float:
    """The CPU seconds of the process alone, all its threads (rosterdrop: serve's acceptor,
    import worker, web and mail threads; not its SFTP worker processes)."""
    return _ticks(f"/proc/{pid}/stat", slice(11, 13))


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


class Server:
    """A running SFTP server: where to connect, as whom, with what; its PID for CPU."""

    def __init__(self, name: str, port: int, pid: int, known_hosts: str, folder: Path | None):
        self.name, self.port, self.pid, self.known_hosts = name, port, pid, known_hosts
        self.folder = folder  # OpenSSH's: uploads as root into it; rosterdrop: one per district
        self.remote_name = "upload.bin"  # rosterdrop: recorded unmatched at once; `--remote-name`

    def target(self, slug: str) -> tuple[str, str]:
        """(user, remote path) of an upload: a district's login, or root into the folder."""
        if self.folder is None:
            return slug, self.remote_name
        return "root", f"{self.folder}/{slug}.bin"


def sftp(server: Server, key: Path, user: str, options: list[str], n: int) -> list[str]:
    """OpenSSH's client from loopback address 127.0.1.(n+1): districts come from addresses of
    their own (rosterdrop caps connections per address, ROSTERDROP_SFTP_MAX_CONNECTIONS_PER_IP)."""
    return [
        "sftp", "-q", "-b", "-", "-P", str(server.port), "-i", str(key), *options,
        "-o", f"BindAddress=127.0.1.{n % 250 + 1}",
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        f"{user}@127.0.0.1",
    ]  # fmt: skip


def timed_uploads(
    server: Server, key: Path, local: Path, targets: list[tuple[str, str]], options: list[str]
) -> dict:
    """Upload `local` once per (user, remote path), all at once; wall time, MB/s, server and
    client CPU."""
    size = local.stat().st_size * len(targets)
    server_before, clients_before = cpu_of(server.pid), children_cpu()
    system_before = system_cpu_of(server.pid)
    loop_before, own_before = main_thread_cpu(server.pid), own_cpu(server.pid)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    running = [
        subprocess.Popen(
            sftp(server, key, user, options, n),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, (user, _) in enumerate(targets)
    ]
    for proc, (_, remote) in zip(running, targets, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(f"put {local} {remote}\n")
        proc.stdin.close()
    failed = []
    for proc in running:
        assert proc.stderr is not None
        if proc.wait() != 0:
            failed.append(proc.stderr.read().strip())
    seconds = time.perf_counter() - began
    time.sleep(0.2)  # OpenSSH's per-connection processes reaped by the listener
    if failed:
        raise SystemExit(f"{server.name}: {len(failed)} uploads failed: {failed[:3]}")
    return {
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "server_cpu_s": round(cpu_of(server.pid) - server_before, 2),
        # of which the kernel's (the copy into the page cache, mostly): see system_cpu_of
        "server_system_cpu_s": round(system_cpu_of(server.pid) - system_before, 2),
        # rosterdrop: its event loop's share (one thread, so one core at most)
        "main_thread_cpu_s": round(main_thread_cpu(server.pid) - loop_before, 2),
        # rosterdrop: serve's own process (with SFTP worker processes, its import worker
        # thread's share shows here: upload29's aftermath of a burst, worker30)
        "serve_own_cpu_s": round(own_cpu(server.pid) - own_before, 2),
        "client_cpu_s": round(children_cpu() - clients_before, 2),
        "load1": round(load, 2),
    }


def start_rosterdrop(
    work: Path, key: Path, slugs: list[str], profile: str, processes: int
) -> tuple[Server, subprocess.Popen]:
    name = f"rosterdrop-p{processes}"
    data = work / name
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTERDROP_")}
    env.update(ROSTERDROP_DATA_DIR=str(data), ROSTERDROP_SFTP_PROCESSES=str(processes))
    rd = str(BIN / "rosterdrop")
    run = dict(env=env, check=True, capture_output=True, timeout=600)
    subprocess.run([rd, "migrate", "-v0"], **run)
    subprocess.run([rd, "shell", "-c", SETUP.format(key=f"{key}.pub", slugs=slugs)], **run)
    pub = subprocess.run([rd, "hostkey", "--public"], **run, text=True).stdout.splitlines()[0]
    port = 23000 + os.getpid() % 100 * 10 + processes * 2
    known = work / f"known_{name}"
    known.write_text(f"[127.0.0.1]:{port} {pub}\n")
    command = [rd, "serve", "--no-demo", "--no-ftps", "--host", "127.0.0.1",
               "--sftp-port", str(port), "--web-port", str(port + 1)]  # fmt: skip
    if profile:  # py-spy (pip install py-spy) samples serve's threads; collapsed stacks
        spy = [str(BIN / "py-spy"), "record", "--nonblocking", "-r", "200", "-f", "raw"]
        spy += ["--subprocesses"] if processes > 1 else []  # the SFTP worker processes too
        command = [*spy, "-o", f"{profile}.{name}", "--", *command]
    serve = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert serve.stdout is not None
    while "Ready." not in serve.stdout.readline():
        assert serve.poll() is None, "serve did not start"
    # Its log goes on (a few lines per connection): read to the end, or a full pipe stops the
    # server in the middle of a run.
    threading.Thread(target=serve.stdout.read, daemon=True).start()
    pid = serve.pid
    if profile:  # the serve process is py-spy's child
        pid = int(Path(f"/proc/{serve.pid}/task/{serve.pid}/children").read_text().split()[0])
    return Server(name, port, pid, str(known), None), serve


def start_openssh(work: Path, key: Path) -> tuple[Server, subprocess.Popen]:
    if not SSHD.exists():
        raise SystemExit(f"{SSHD} is missing: apt-get install -y openssh-server")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True
    )
    shutil.copy(f"{key}.pub", work / "authorized_keys")
    port = 24000 + os.getpid() % 1000
    config = work / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=port, work=work))
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
    sshd = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    known = work / "known_openssh"
    pub = (work / "host_key.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    for _ in range(100):
        probe = subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True)
        if probe.stdout:
            break
        time.sleep(0.1)
    target = work / "openssh"
    target.mkdir()
    server = Server("openssh", port, sshd.pid, str(known), target)
    return server, sshd


def make_file(path: Path, size_mb: int) -> Path:
    """Random bytes (incompressible, unlike CSV; ssh compresses nothing by default anyway)."""
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(1 << 20))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--file", type=Path, help=f"the single-stream file (default {HUGE} if there)"
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="generated file size otherwise")
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--each-mb", type=int, default=20, help="size of each concurrent upload")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["rosterdrop", "openssh"])
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[2],
        help="rosterdrop's ROSTERDROP_SFTP_PROCESSES, a server for each (e.g. 1 2 3; serve's "
        "default is 2)",
    )
    parser.add_argument(
        "--sftp-option", action="append", default=[], help="e.g. -B 262144 (one word each)"
    )
    parser.add_argument(
        "--profile", default="", help="py-spy raw output: PROFILE.rosterdrop-pN per server"
    )
    parser.add_argument("--skip", choices=["single", "concurrent"])
    parser.add_argument(
        "--remote-name",
        default="upload.bin",
        help="rosterdrop's name for each upload: upload.bin is recorded unmatched at once; a name "
        "the format reads (users.csv) waits out the districts' quiet period (a day), as nightly "
        "files do, for the import worker",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        key = work / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        big = args.file or (HUGE if HUGE.exists() else make_file(work / "big.bin", args.size_mb))
        small = make_file(work / "small.bin", args.each_mb)
        singles = [f"one{r}" for r in range(args.repeat)]
        many = [[f"c{r}x{i}" for i in range(args.concurrent)] for r in range(args.repeat)]
        results: dict = {
            "file_mb": round(big.stat().st_size / 1e6, 1),
            "concurrent": f"{args.concurrent} x {args.each_mb} MiB",
            "sftp_options": args.sftp_option,
        }
        servers = []
        try:
            if args.only in (None, "rosterdrop"):
                slugs = singles + [s for run in many for s in run]
                for processes in args.processes:
                    servers.append(start_rosterdrop(work, key, slugs, args.profile, processes))
                    servers[-1][0].remote_name = args.remote_name
            if args.only in (None, "openssh"):
                servers.append(start_openssh(work, key))
            for server, _ in servers:
                runs: dict[str, list[dict]] = {"single": [], "concurrent": []}
                for r in range(args.repeat):
                    if args.skip != "single":
                        target = server.target(singles[r])
                        runs["single"].append(
                            timed_uploads(server, key, big, [target], args.sftp_option)
                        )
                        print(server.name, "single", runs["single"][-1], file=sys.stderr)
                    if args.skip != "concurrent":
                        targets = [server.target(slug) for slug in many[r]]
                        runs["concurrent"].append(
                            timed_uploads(server, key, small, targets, args.sftp_option)
                        )
                        print(server.name, "concurrent", runs["concurrent"][-1], file=sys.stderr)
                    if server.folder is not None:
                        shutil.rmtree(server.folder)
                        server.folder.mkdir()
                results[server.name] = {
                    kind: {
                        "median_mb_per_s": statistics.median(r["mb_per_s"] for r in done),
                        "runs": done,
                    }
                    for kind, done in runs.items()
                    if done
                }
        finally:
            for server, proc in servers:
                os.kill(server.pid, signal.SIGTERM)  # under py-spy: it writes on the exit
                proc.wait(120)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
