"""A deployment at scale on loopback: two front ends (`rosterdrop serve --no-worker`) on one
PostgreSQL database behind real HAProxy (deploy/haproxy.cfg, send-proxy-v2), districts
connecting from a second loopback address (127.0.0.2) as they would from the internet.

HAProxy listens on 127.0.0.10; the front ends on 127.0.0.1, which is the balancer's source
address towards them and their ROSTERDROP_TRUSTED_PROXIES.
"""

import base64
import hashlib
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sftp_fixtures import PASSWORD, ROOT, ROSTERDROP, SETUP, Server, free_port

BALANCER = "127.0.0.10"
DISTRICT_ADDRESS = "127.0.0.2"  # where the districts' clients connect from
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"


class Balancer:
    """HAProxy in the foreground with deploy/haproxy.cfg, its addresses from the environment."""

    def __init__(self, front_ends: list[Server], passive: list[range]):
        self.ports = {name: free_port() for name in ("sftp", "ftps", "ftps_implicit", "http")}
        self.env = {
            "RD_LISTEN": BALANCER,
            "RD_SFTP_PORT": str(self.ports["sftp"]),
            "RD_FTPS_PORT": str(self.ports["ftps"]),
            "RD_FTPS_IMPLICIT_PORT": str(self.ports["ftps_implicit"]),
            "RD_HTTP_PORT": str(self.ports["http"]),
        }
        for i, (fe, ports) in enumerate(zip(front_ends, passive, strict=True), 1):
            self.env.update({
                f"RD_FE{i}_HOST": "127.0.0.1",
                f"RD_FE{i}_SFTP_PORT": str(fe.port),
                f"RD_FE{i}_FTPS_PORT": str(fe.ftps_port),
                f"RD_FE{i}_FTPS_IMPLICIT_PORT": str(fe.ftps_implicit_port),
                f"RD_FE{i}_WEB_PORT": str(fe.web_port),
                f"RD_FE{i}_PASSIVE_PORTS": f"{ports[0]}-{ports[-1]}",
            })  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                socket.create_connection((BALANCER, self.ports["http"]), 1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("haproxy did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@dataclass
class Cluster:
    url: str
    front_ends: list[Server]
    balancer: Balancer
    key: Path  # the districts' SSH client key
    workdir: Path
    known_hosts: Path = field(init=False)
    workers: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.known_hosts = self.workdir / "known_hosts_balancer"

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.url) as db:
            return db.execute(sql, params).fetchall()

    def pin_host_keys(self) -> None:
        """known_hosts for the balancer's address, from the keys the database holds."""
        port = self.balancer.ports["sftp"]
        keys = self.front_ends[0].cli("hostkey", "--public").splitlines()
        self.known_hosts.write_text("".join(f"[{BALANCER}]:{port} {k}\n" for k in keys))

    def sftp(
        self, batch: str, login: str = "alpha", check: bool = True, source: str = DISTRICT_ADDRESS
    ) -> subprocess.CompletedProcess:
        """OpenSSH sftp through the balancer, from a district's address, host key pinned."""
        cmd = [
            "sftp", "-b", "-", "-P", str(self.balancer.ports["sftp"]), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"BindAddress={source}",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=20", f"{login}@{BALANCER}",
        ]  # fmt: skip
        result = subprocess.run(cmd, input=batch, capture_output=True, text=True, timeout=300)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def pinned_public_key(self) -> str:
        """curl's --pinnedpubkey for the FTPS certificate in the database (its name is not
        the balancer's address, so districts pin the key, as they pin SSH host keys)."""
        [(pem,)] = self.query("select certificate from intake_serverkey where name = 'ftps'")
        cert = x509.load_pem_x509_certificate(pem.encode())
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def curl_ftps(
        self, path: Path, name: str, login: str = "alpha", source: str = DISTRICT_ADDRESS
    ) -> subprocess.CompletedProcess:
        """curl uploading over explicit FTPS (AUTH TLS) through the balancer."""
        url = f"ftp://{BALANCER}:{self.balancer.ports['ftps']}/{name}"
        cmd = [
            "curl", "-sS", "--fail", "--max-time", "120", "--ssl-reqd", "-k",
            "--pinnedpubkey", self.pinned_public_key(), "--interface", source,
            "--user", f"{login}:{PASSWORD}", "-T", str(path), url,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180)

    def http(self, path: str, source: str, *extra: str, direct: bool = False) -> int:
        """The status of a GET through the balancer (or straight to the first front end)."""
        if direct:
            base = f"http://127.0.0.1:{self.front_ends[0].web_port}"
        else:
            base = f"http://{BALANCER}:{self.balancer.ports['http']}"
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30",
             "--interface", source, *extra, base + path],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return int(out.stdout or 0)


def start_workers(cluster: "Cluster", count: int, env: dict[str, str]) -> None:
    """`rosterdrop worker` processes on the cluster's database (and storage)."""
    base = {k: v for k, v in cluster.front_ends[0].env.items() if k != "ROSTERDROP_DATA_DIR"}
    for i in range(count):
        data = cluster.workdir / f"worker{i}"
        log = (cluster.workdir / f"worker{i}.log").open("w")
        proc = subprocess.Popen(
            [ROSTERDROP, "worker"],
            env={**base, **env, "ROSTERDROP_DATA_DIR": str(data)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        cluster.workers.append(proc)
    for i, proc in enumerate(cluster.workers):
        deadline = time.monotonic() + 120
        while "Ready." not in (cluster.workdir / f"worker{i}.log").read_text():
            assert proc.poll() is None, (cluster.workdir / f"worker{i}.log").read_text()
            assert time.monotonic() < deadline, "a worker did not start"
            time.sleep(0.2)


def stop_workers(cluster: "Cluster") -> None:
    for proc in cluster.workers:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def start_cluster(make_server, url: str, key: Path, tmp_path: Path, **env: str) -> "Cluster":
    """Two front ends (`serve --no-worker`, `env` added) on `url` behind HAProxy."""
    first = random.randrange(20000, 31000)
    passive = [range(first, first + 20), range(first + 20, first + 40)]
    front_ends = []
    for ports in passive:
        front_ends.append(
            make_server(
                args=("--no-worker",),
                ROSTERDROP_DATABASE_URL=url,
                ROSTERDROP_TRUSTED_PROXIES="127.0.0.1",
                ROSTERDROP_FTPS_MASQUERADE_ADDRESS=BALANCER,
                ROSTERDROP_FTPS_PASSIVE_PORTS=f"{ports[0]}-{ports[-1]}",
                ROSTERDROP_METRICS_ALLOW=DISTRICT_ADDRESS,
                ROSTERDROP_SHUTDOWN_SECONDS="5",  # a restart in the test waits no longer
                **env,
            )
        )
    balancer = Balancer(front_ends, passive)
    balancer.start()
    cluster = Cluster(url, front_ends, balancer, key, tmp_path)
    cluster.pin_host_keys()
    return cluster


@pytest.fixture
def cluster(make_server, postgres_database, sftp_template, tmp_path):
    """Two front ends on one PostgreSQL database behind HAProxy, districts alpha and beta."""
    url, _ = postgres_database
    key = sftp_template[1]
    cluster = start_cluster(make_server, url, key, tmp_path)
    cluster.front_ends[0].cli("shell", "-c", SETUP.format(key=str(key) + ".pub"))
    yield cluster
    cluster.balancer.stop()
    stop_workers(cluster)
