"""The deployment at scale, on loopback (issue 18): PostgreSQL, an S3 server (moto), HAProxy
(deploy/haproxy.cfg) in front of two front ends (`serve --no-worker`) and two workers
(`rosterdrop worker`). Through the balancer 50 districts upload at once with OpenSSH sftp and
5 with FTPS (curl), each from an address of its own: every upload lands once in storage and is
imported once, the audit log shows each district's address, the host keys are the same through
both front ends and across their restarts, a ban earned on one front end refuses the address on
the other, and a worker killed (kill -9) mid-import is replaced, the roster applied once.

With ROSTERDROP_CLUSTER_FIGURES=path the test writes its throughput there (bench/cluster.md)."""

import asyncio
import json
import os
import signal
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import asyncssh
import pytest
from cluster_fixtures import BALANCER, start_cluster, start_workers, stop_workers
from district_logins import district_logins
from sftp_fixtures import DISTRICT_LARGE, PASSWORD, SCHOOL_SMALL

pytestmark = pytest.mark.slow

SFTP_DISTRICTS = [f"s{n:02d}" for n in range(1, 51)]
FTPS_DISTRICTS = [f"f{n}" for n in range(1, 6)]


def source(slug: str) -> str:
    """Each district connects from an address of its own (127.0.1.N for SFTP, 127.0.2.N FTPS)."""
    return f"127.0.{1 if slug[0] == 's' else 2}.{int(slug[1:])}"


def host_keys(port: int, host: str = BALANCER, local: str = "127.0.3.9") -> set[str]:
    """The host keys a server presents, one connection per algorithm, from a district's
    address (from 127.0.0.1, the balancer's own, a front end requires a PROXY header)."""

    async def fetch() -> set[str]:
        found = set()
        for alg in ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512"):
            key = await asyncio.wait_for(asyncssh.get_server_host_key(
                host, port, server_host_key_algs=[alg], local_addr=(local, 0),
            ), 60)  # fmt: skip
            assert key is not None
            found.add(key.export_public_key().decode().strip())
        return found

    return asyncio.run(fetch())


async def unknown_login(port: int, local: str) -> None:
    with pytest.raises(asyncssh.DisconnectError):
        await asyncssh.connect(
            "127.0.0.1", port, username="nobody", password="guess", local_addr=(local, 0),
            known_hosts=None, agent_path=None, client_keys=None, connect_timeout=20,
        )  # fmt: skip


def closed_at_once(port: int, local: str, host: str = "127.0.0.1") -> bool:
    """Whether a connection from `local` is closed before the server says a word."""
    import socket

    sock = socket.socket()
    sock.bind((local, 0))
    sock.settimeout(20)
    sock.connect((host, port))
    try:
        return sock.recv(64) == b""
    except ConnectionResetError:
        return True
    finally:
        sock.close()


def test_fifty_districts_through_haproxy_onto_two_front_ends_and_two_workers(
    make_server, postgres_database, sftp_template, s3, tmp_path
):
    url, _ = postgres_database
    key = sftp_template[1]
    cluster = start_cluster(
        make_server, url, key, tmp_path, ROSTERDROP_DEFENDER_THRESHOLD="2", **s3.env
    )
    try:
        run(cluster, s3, key, tmp_path)
    finally:
        cluster.balancer.stop()
        stop_workers(cluster)


def run(cluster, s3, key, tmp_path) -> None:
    slugs = SFTP_DISTRICTS + FTPS_DISTRICTS
    setup = district_logins([*slugs, "large"], key.with_suffix(".pub"), PASSWORD)
    cluster.front_ends[0].cli("shell", "-c", setup)
    start_workers(cluster, 2, s3.env)
    roster = tmp_path / "roster.zip"
    with zipfile.ZipFile(roster, "w") as z:
        for f in sorted(SCHOOL_SMALL.iterdir()):
            z.write(f, f.name)

    # 55 districts at once through the balancer.
    def send(slug: str) -> subprocess.CompletedProcess:
        if slug in FTPS_DISTRICTS:
            return cluster.curl_ftps(roster, "roster.zip", login=slug, source=source(slug))
        return cluster.sftp(f"put {roster} roster.zip\n", slug, False, source(slug))

    began = time.monotonic()
    with ThreadPoolExecutor(len(slugs)) as pool:
        sent = dict(zip(slugs, pool.map(send, slugs), strict=True))
    upload_seconds = time.monotonic() - began
    failed = {s: r.stderr for s, r in sent.items() if r.returncode}
    assert not failed
    cluster_idle(cluster, timeout=900)
    import_seconds = time.monotonic() - began

    # Each upload once in the inbox, once in storage, imported once; each district's address.
    uploads = cluster.query(
        "select d.slug, u.source, host(u.source_ip), u.status, u.stored_path "
        "from inbox_upload u join districts_district d on d.id = u.district_id"
    )
    assert sorted(u[0] for u in uploads) == sorted(slugs)
    for slug, transport, ip, status, _ in uploads:
        assert (transport, ip, status) == (
            "ftps" if slug in FTPS_DISTRICTS else "sftp",
            source(slug),
            "imported",
        )
    objects = s3.objects()
    for slug in slugs:
        assert len([o for o in objects if o.startswith(f"inbox/{slug}/")]) == 1, slug
    assert not s3.unfinished()
    applied = cluster.query(
        "select d.slug, count(*) from ingest_sync s join districts_district d "
        "on d.id = s.district_id where s.status = 'applied' group by d.slug"
    )
    assert dict(applied) == dict.fromkeys(slugs, 1)
    assert not cluster.query("select 1 from ingest_sync where status <> 'applied'")
    logins = cluster.query(
        "select login, host(ip) from audit_auditevent where kind = 'login_ok'"
    )  # fmt: skip
    assert sorted(logins) == sorted((s, source(s)) for s in slugs)

    # The host keys: one set, through the balancer and straight from each front end, and the
    # same after both restart.
    keys = set(cluster.front_ends[0].cli("hostkey", "--public").splitlines())
    sftp_port = cluster.balancer.ports["sftp"]
    refused = cluster.query("select host(ip), detail from audit_auditevent where kind in "
                            "('connection_refused', 'login_refused', 'ban')")  # fmt: skip
    assert not refused  # nobody, the balancer's health checks least, was refused or banned
    assert host_keys(sftp_port) == keys
    for fe in cluster.front_ends:
        assert host_keys(fe.port, "127.0.0.1") == keys
        fe.stop()
        fe.start()
    assert [host_keys(fe.port, "127.0.0.1") for fe in cluster.front_ends] == [keys, keys]
    time.sleep(5)  # HAProxy's checks (every 2 s) see them up again
    assert host_keys(sftp_port) == keys

    # A ban earned on one front end refuses the address on the other, and through HAProxy.
    first, second = cluster.front_ends
    asyncio.run(unknown_login(first.port, "127.0.3.1"))
    assert closed_at_once(second.port, "127.0.3.1")
    assert closed_at_once(sftp_port, "127.0.3.1", BALANCER)
    banned = cluster.query("select host(ip) from intake_ban where banned_until > now()")
    assert banned == [("127.0.3.1",)]

    # kill -9 of the worker running an import: the other finishes it, applied once.
    cluster.sftp(f"put {DISTRICT_LARGE} large.zip\n", "large", source="127.0.4.1")
    deadline = time.monotonic() + 300
    while not (running := cluster.query("select runner from ingest_sync where status = 'running'")):
        assert time.monotonic() < deadline, "the large import never started"
        time.sleep(0.05)
    pid = int(running[0][0].split("s")[0].removeprefix("p"))
    [doomed] = [w for w in cluster.workers if w.pid == pid]
    os.kill(pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    cluster_idle(cluster, timeout=600)
    last = cluster.query(
        "select s.status from ingest_sync s join districts_district d on d.id = s.district_id "
        "where d.slug = 'large' order by s.id"
    )
    assert [s for (s,) in last] == ["interrupted", "applied"]
    users = cluster.query(
        "select (select count(*) from feed_event e join districts_district d "
        "on d.id = e.district_id where d.slug = 'large' and e.entity = 'users' "
        "and e.action = 'created') + (select coalesce(sum(r.last_seq - r.first_seq + 1), 0) "
        "from feed_createdrange r join districts_district d on d.id = r.district_id "
        "where d.slug = 'large' and r.entity = 'users')"
    )
    [(large_users,)] = cluster.query(
        "select count(*) from roster_user r join districts_district d on d.id = r.district_id "
        "where d.slug = 'large'"
    )
    assert users == [(large_users,)]  # every user created once: the cut apply left nothing

    figures = {
        "districts": len(slugs),
        "bytes": len(slugs) * roster.stat().st_size,
        "upload_seconds": round(upload_seconds, 2),
        "upload_mb_per_s": round(len(slugs) * roster.stat().st_size / upload_seconds / 1e6, 2),
        "imports_per_minute": round(len(slugs) / import_seconds * 60, 1),
        "load": os.getloadavg(),
    }
    print(json.dumps(figures))
    if path := os.environ.get("ROSTERDROP_CLUSTER_FIGURES"):
        with open(path, "w") as out:
            json.dump(figures, out, indent=2)


def cluster_idle(cluster, timeout: float) -> None:
    """Until no upload waits, no sync runs and no import job waits or runs."""
    deadline = time.monotonic() + timeout
    while cluster.query(
        "select 1 from inbox_upload where status = 'received' union all "
        "select 1 from ingest_sync where status = 'running' union all "
        "select 1 from procrastinate_jobs where task_name = 'rosterdrop.import_district' "
        "and status in ('todo', 'doing')"
    ):
        assert time.monotonic() < deadline, "the workers did not finish"
        time.sleep(0.5)
