"""Real HAProxy (deploy/haproxy.cfg, send-proxy-v2) in front of two front ends on one
PostgreSQL database: SFTP, FTPS (control and passive data through the balancer) and the web
see the district's own address (127.0.0.2), never the balancer's."""

import subprocess

import pytest
from cluster_fixtures import BALANCER, DISTRICT_ADDRESS
from sftp_fixtures import ORGS

pytestmark = pytest.mark.slow


def keyscan(port: int) -> set[str]:
    out = subprocess.run(
        ["ssh-keyscan", "-T", "30", "-p", str(port), "-t", "ed25519,ecdsa,rsa", BALANCER],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return {" ".join(line.split()[1:3]) for line in out.stdout.splitlines()}


def test_the_audit_log_shows_the_address_haproxy_saw(cluster):
    # SFTP with OpenSSH, through the balancer, host keys pinned from the database.
    cluster.sftp(f"put {ORGS} orgs.csv\n")
    # FTPS with curl: control and passive data connections both through the balancer.
    for n in range(3):
        done = cluster.curl_ftps(ORGS, f"orgs-{n}.csv", login="alpha.admin.district.st")
        assert done.returncode == 0, done.stderr
    uploads = cluster.query("select filename, source, host(source_ip) from inbox_upload")
    assert sorted(uploads) == [
        ("orgs-0.csv", "ftps", DISTRICT_ADDRESS),
        ("orgs-1.csv", "ftps", DISTRICT_ADDRESS),
        ("orgs-2.csv", "ftps", DISTRICT_ADDRESS),
        ("orgs.csv", "sftp", DISTRICT_ADDRESS),
    ]
    logins = cluster.query("select host(ip) from audit_auditevent where kind = 'login_ok'")
    assert logins == [(DISTRICT_ADDRESS,)] * 4
    # HAProxy's health checks (LOCAL headers) are neither refused nor scored.
    assert not cluster.query("select 1 from audit_auditevent where kind = 'connection_refused'")
    assert not cluster.query("select 1 from intake_ban")

    # Every connection through the balancer meets the same host keys, whichever front end.
    keys = set(cluster.front_ends[0].cli("hostkey", "--public").splitlines())
    for _ in range(4):
        assert keyscan(cluster.balancer.ports["sftp"]) == keys

    # The web: /metrics is allowed for 127.0.0.2 only (ROSTERDROP_METRICS_ALLOW).
    assert cluster.http("/metrics", DISTRICT_ADDRESS) == 200
    forged = ("-H", f"X-Forwarded-For: {DISTRICT_ADDRESS}")
    assert cluster.http("/metrics", "127.0.0.3", *forged) == 403  # HAProxy appends .3
    assert cluster.http("/metrics", "127.0.0.3", *forged, direct=True) == 403  # untrusted
