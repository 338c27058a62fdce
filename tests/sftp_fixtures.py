"""A real `rosterdrop serve` in a subprocess with its own data folder, and clients to drive it.

Each server copies a data folder prepared once per session (migrated database, host key and
FTPS certificate, two districts with logins), so starting one takes about a second. It serves
SFTP and FTPS (explicit and implicit). Loopback only; free ports.

A migrate from an empty database costs ~4.4 s of CPU (and PostgreSQL's own): each pytest run
migrates one SQLite data folder and one PostgreSQL database once (run_fixtures.py: its first
worker that needs them), and the tests copy them. That migrate is the only command of the
suite's helpers that runs Django's system checks (~0.6 s of each command's start); the others
pass --skip-checks.
"""

import base64
import functools
import hashlib
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import asyncssh
import pytest
from run_fixtures import Run, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]
ROSTERDROP = str(Path(sys.executable).with_name("rosterdrop"))
SAMPLES = ROOT / "tests" / "samples" / "oneroster11-generated"
SCHOOL_SMALL = SAMPLES / "school-small"
DISTRICT_LARGE = SAMPLES / "district-large.zip"
ORGS = SCHOOL_SMALL / "orgs.csv"
PASSWORD = "correct horse battery"

SETUP = f"""
from rosterdrop.districts.models import District
from rosterdrop.intake.models import Login
for slug in ("alpha", "beta"):
    d = District.objects.create(slug=slug, name=slug.title(), format="oneroster-1.1",
                                quiet_period_seconds=1)
    login = Login(district=d, name=slug)
    login.set_password({PASSWORD!r})
    login.add_public_key(open({{key!r}}).read())
    login.save()
# Istation's naming scheme; FTPS clients may write it with dots (alpha.admin.district.st).
login = Login(district=District.objects.get(slug="alpha"), name="alpha_admin_district_st")
login.set_password({PASSWORD!r})
login.save()
"""


@functools.cache
def runs_checks(name: str) -> bool:
    """Whether `rosterdrop <name>` runs Django's system checks (and so takes --skip-checks)."""
    from django.core.management import get_commands, load_command_class

    return bool(load_command_class(get_commands()[name], name).requires_system_checks)


def command(name: str, *args: str) -> list[str]:
    """`rosterdrop name args...` without Django's system checks (see the module's doc)."""
    return [ROSTERDROP, name, *(["--skip-checks"] if runs_checks(name) else []), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTERDROP_")}
    env.update(ROSTERDROP_DATA_DIR=str(data_dir), ROSTERDROP_SFTP_LOGIN_DELAY="0.2")
    # One process: each server of the suite starts in a second, not three. What several SFTP
    # processes must share is tested with them (test_sftp_processes.py).
    env.update(ROSTERDROP_SFTP_PROCESSES="1")
    return env


class Server:
    def __init__(self, data_dir: Path, key: Path, env: dict[str, str], args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.key = key
        self.args = args  # more of serve's options, e.g. --no-worker
        self.env = {**base_env(data_dir), **env}
        # Below Linux's ephemeral range (32768-60999), where free_port() and clients take
        # theirs; pyftpdlib falls back to any port if all of these are taken.
        first = random.randrange(20000, 32000)
        self.passive_ports = range(first, first + 20)
        self.env.setdefault("ROSTERDROP_FTPS_PASSIVE_PORTS", f"{first}-{first + 19}")
        self.proc: subprocess.Popen | None = None
        self.output = ""  # what it printed up to "Ready."
        self.log: deque[str] = deque(maxlen=100_000)  # the lines it printed after that
        self._log_reader: threading.Thread | None = None
        self.started = False
        self.known_hosts = data_dir / "known_hosts"
        self._pick_ports()

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.web_port = free_port()
        self.ftps_port = free_port()
        self.ftps_implicit_port = free_port()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_key()}\n")

    def host_key(self, algorithm: str = "ssh-ed25519") -> str:
        """The host key's OpenSSH public key line, from the database every front end shares."""
        sql = "select public_key from intake_serverkey where name = ?"
        return self.query(sql, algorithm)[0]["public_key"]

    def ftps_cert(self) -> Path:
        """The FTPS certificate (from the database) as a file, for clients to trust."""
        path = self.data_dir / "client-ftps-cert.pem"
        if not path.exists():
            sql = "select certificate from intake_serverkey where name = 'ftps'"
            path.write_text(self.query(sql)[0]["certificate"])
        return path

    def start(self) -> None:
        """Start, retrying when a port chosen as free was taken meanwhile (a known race of
        picking free ports): new ports on a first start, the same ones after a restart."""
        for attempt in range(3):
            try:
                self._start()
                self.started = True
                return
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                if self.started:
                    time.sleep(1)
                else:
                    self._pick_ports()

    def _start(self) -> None:
        cmd = [
            ROSTERDROP,
            "serve",
            "--no-demo",
            "--host",
            "127.0.0.1",
            "--web-port",
            str(self.web_port),
            "--sftp-port",
            str(self.port),
            "--ftps-port",
            str(self.ftps_port),
            "--ftps-implicit-port",
            str(self.ftps_implicit_port),
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 180  # a first start migrates; the test machine is shared
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "Ready.":
                self.output = "".join(lines)
                self._log_reader = threading.Thread(
                    target=self._read_log, args=(self.proc,), daemon=True
                )
                self._log_reader.start()
                return
        raise RuntimeError("server did not start:\n" + "".join(lines))

    def _read_log(self, proc: subprocess.Popen) -> None:
        """Read everything the server prints after it is ready, to its end: a pipe nobody
        reads fills up (a few lines per connection) and stops the server at its next line."""
        for line in proc.stdout:
            self.log.append(line)

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            # Generous: a loaded machine (the suite's own workers and other jobs on two cores)
            # has been seen to take over 20 s; tests that time a stop measure it themselves.
            self.proc.wait(timeout=60)
        if self._log_reader is not None:  # its last lines, read to the pipe's end
            self._log_reader.join(timeout=10)
            self._log_reader = None
        self.proc = None

    def cli(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            command(*args),
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def query(self, sql: str, *params) -> list[sqlite3.Row]:
        with sqlite3.connect(self.data_dir / "rosterdrop.sqlite3", timeout=30) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, params).fetchall()

    def uploads(self) -> list[sqlite3.Row]:
        return self.query("select * from inbox_upload order by id")

    def syncs(self) -> list[sqlite3.Row]:
        return self.query("select * from ingest_sync order by id")

    def audit(self, kind: str) -> list[sqlite3.Row]:
        return self.query("select * from audit_auditevent where kind = ? order by id", kind)

    def root(self, slug: str = "alpha") -> Path:
        return self.data_dir / "sftp" / slug

    def wait_for(self, check, timeout: float = 60.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(
            f"timed out waiting for {what}; the server's last lines:\n"
            + "".join(list(self.log)[-200:])
        )

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until no upload waits, no sync runs and no sync's search index is still to be built
        (the worker builds it after the sync: ingest.index_builds)."""
        from rosterdrop.ingest.states import INDEXED  # Django is set up by now

        # ingest.index_builds.wanted, in the server's database: an outcome, not a dry run, an
        # upload still kept, the index not built yet.
        index_wanted = f"""
            select 1 from ingest_sync s where not s.dry_run and s."index" != 'built'
            and s.status in ({", ".join("?" * len(INDEXED))}) and exists (
                select 1 from ingest_sync_uploads su join inbox_upload u on u.id = su.upload_id
                where su.sync_id = s.id and u.stored_path != '')"""
        self.wait_for(
            lambda: (
                not self.query("select 1 from inbox_upload where status = 'received'")
                and not self.query("select 1 from ingest_sync where status = 'running'")
                and not self.query(index_wanted, *map(str, INDEXED))
            ),
            timeout,
            "the worker to finish",
        )

    def curl_host_key(self) -> str:
        """The host key's digest as curl's --hostpubsha256 wants it: curl's libssh2 prefers
        ECDSA to ed25519, so it is the ECDSA key's fingerprint, as serve printed it."""
        fingerprint = self.output.split("also:     SHA256:")[1].split()[0]
        assert "(ecdsa-sha2-nistp256)" in self.output.split(fingerprint)[1].splitlines()[0]
        return base64.b64encode(base64.b64decode(fingerprint + "=")).decode().rstrip("=")

    def openssh(
        self, batch: str, login: str = "alpha", *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run the OpenSSH sftp client in batch mode with key auth and a pinned host key."""
        cmd = [
            "sftp",
            "-b",
            "-",
            "-P",
            str(self.port),
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=10",
            *extra,
            f"{login}@127.0.0.1",
        ]
        result = subprocess.run(cmd, input=batch, capture_output=True, text=True, timeout=120)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def connect(self, login: str = "alpha", **kwargs):
        """An asyncssh client connection (use with `async with`)."""
        options = dict(
            username=login,
            known_hosts=str(self.known_hosts),
            client_keys=[str(self.key)],
            agent_path=None,
            connect_timeout=10,
        )
        options.update(kwargs)
        return asyncssh.connect("127.0.0.1", self.port, **options)

    def sync_list(self) -> list[dict]:
        return json.loads(self.cli("sync", "list", "--json"))


def migrate(env: dict[str, str]) -> None:
    """`rosterdrop migrate` from empty, with Django's system checks (see the module's doc).
    Generous: on PostgreSQL at load 25-33 one took over 120 s, and a session fixture's failure
    fails every test of the worker that uses it."""
    done = subprocess.run(
        [ROSTERDROP, "migrate", "-v0"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def migrated_data(run: Run) -> Path:
    """A data folder with its SQLite database migrated and nothing else, to copy."""
    return run.once("migrated", lambda data: migrate(base_env(data)))


@pytest.fixture(scope="session")
def sftp_template(migrated_data: Path, run: Run) -> tuple[Path, Path]:
    """A data folder with the database migrated, a host key and two districts with logins, and
    the clients' key of those logins (base/data, base/client_key)."""

    def make(base: Path) -> None:
        base.mkdir()
        key = base / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        data = base / "data"
        shutil.copytree(migrated_data, data)
        options = dict(env=base_env(data), check=True, capture_output=True, timeout=120)
        subprocess.run(command("hostkey"), **options)
        subprocess.run([ROSTERDROP, "shell", "-c", SETUP.format(key=str(key) + ".pub")], **options)

    base = run.once("sftp-template", make)
    return base / "data", base / "client_key"


@pytest.fixture
def make_server(sftp_template, tmp_path):
    """Start servers (with extra environment) on copies of the template data folder."""
    servers: list[Server] = []

    def make(data_dir: Path | None = None, args: tuple[str, ...] = (), **env: str) -> Server:
        if data_dir is None:
            data_dir = tmp_path / f"data{len(servers)}"
            shutil.copytree(sftp_template[0], data_dir)
        server = Server(data_dir, sftp_template[1], env, args)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


@pytest.fixture(scope="session")
def postgres_template(run: Run, tmp_path_factory) -> str:
    """The name of a PostgreSQL database migrated and nothing else (no host keys: tests of
    front ends see them made), which tests copy with CREATE DATABASE ... TEMPLATE."""

    def make(name: str) -> None:
        create_database(name)
        env = base_env(tmp_path_factory.mktemp("postgres-template"))
        migrate({**env, "ROSTERDROP_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"})

    return run.database("rd_template", make)


@pytest.fixture
def postgres_database(request, run: Run, postgres_template: str):
    """A migrated PostgreSQL database of this test's own (its URL, and a function that drops
    it), dropped at the end: servers started on it share it as front ends of one deployment do."""
    name = run.database_name(request.node.name)
    create_database(name, postgres_template)
    yield f"postgresql://postgres@127.0.0.1:5432/{name}", lambda: drop_database(name)
    drop_database(name)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_zip_imported(server: Server, source: str, login: str) -> None:
    """district-large.zip arrived as roster.zip: recorded, kept as sent, shown, applied once."""
    [upload] = server.uploads()
    assert (upload["filename"], upload["source"], upload["login"]) == ("roster.zip", source, login)
    assert upload["source_ip"] == "127.0.0.1"
    assert upload["sha256"] == sha256(DISTRICT_LARGE)
    assert upload["status"] == "imported"
    assert sha256(server.data_dir / upload["stored_path"]) == upload["sha256"]
    assert (server.root() / "roster.zip").read_bytes() == DISTRICT_LARGE.read_bytes()
    [sync] = server.syncs()
    assert sync["status"] == "applied"
    assert len(server.audit("upload")) == 1
    assert server.audit("login_ok")[0]["login"] == login
    assert not list((server.data_dir / "sftp-tmp" / "alpha").iterdir())


def snapshot(path) -> dict[str, bytes]:
    """Every file under path (links recorded as their target), to compare before and after."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                out[full] = b"->" + os.readlink(full).encode()
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    out[full] = f.read()
    return out


@pytest.fixture
def planted(server):
    """Outside files, a prefix sibling, and links pre-placed in the district's folder."""
    outside = server.data_dir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    evil = server.data_dir / "sftp" / "alpha_evil"
    evil.mkdir(parents=True)
    (evil / "x.csv").write_text("EVIL")
    root = server.root()
    root.mkdir(parents=True, exist_ok=True)
    (root / "orgs.csv").write_bytes(ORGS.read_bytes())
    os.symlink(outside / "secret.txt", root / "escape_link")
    os.symlink(outside / "missing.txt", root / "dangling_link")
    os.symlink(outside, root / "dir_link")
    os.symlink("orgs.csv", root / "inside_link")
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.link(outside / "secret.txt", root / "hard_link")
    return server, outside


def mailing_server(make_server, smtp_port: int, email: str, **district) -> "Server":
    """A serve that mails through the SMTP sink on `smtp_port`, with `email` subscribed to
    every mail of district alpha (on success too); `district`: alpha's fields to set first."""
    server = make_server(
        ROSTERDROP_SMTP_HOST="127.0.0.1",
        ROSTERDROP_SMTP_PORT=str(smtp_port),
        ROSTERDROP_SMTP_TLS="none",
    )
    server.cli(
        "shell",
        "-c",
        "from rosterdrop.districts.models import District as D;"
        "from rosterdrop.notify.models import Subscription as S;"
        f"D.objects.filter(slug='alpha').update(**{district!r});"
        f"S.objects.create(district=D.objects.get(slug='alpha'), email={email!r}, on_success=True)",
    )
    return server
