"""The SFTP front end in several processes (ROSTERDROP_SFTP_PROCESSES, intake/sftp_workers.py):
what the processes must share, shared; real OpenSSH `sftp` clients on loopback."""

import asyncio
import os
import signal
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import asyncssh
import psycopg
import psycopg.rows
import pytest
from sftp_fixtures import SCHOOL_SMALL, SETUP, Server, sha256

pytestmark = pytest.mark.slow

# Uploads are imported at once or never within the test: the import worker polls every
# ROSTERDROP_WORKER_POLL_SECONDS, so only the hand-off from the SFTP process that stored the
# upload to the worker can start it sooner.
NO_POLL = "600"


def sftp_processes(server: Server) -> list[int]:
    """The SFTP worker processes of a serve (its children)."""
    assert server.proc is not None
    pid = server.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def connections_of(server: Server) -> dict[int, int]:
    """How many established connections to the SFTP port each worker process holds."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == server.port and fields[3] == "01":  # ESTABLISHED
                established.add(fields[9])  # the socket's inode
    held = {}
    for pid in sftp_processes(server):
        fds = Path(f"/proc/{pid}/fd")
        links = [os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink()]
        held[pid] = sum(link[8:-1] in established for link in links if link.startswith("socket:"))
    return held


class Session:
    """An OpenSSH `sftp` client kept connected, given commands one at a time."""

    def __init__(self, server: Server, login: str):
        command = [
            "sftp", "-b", "-", "-P", str(server.port), "-i", str(server.key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            f"{login}@127.0.0.1",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.run("ls")

    def run(self, command: str) -> str:
        """Send a command, then a `pwd` to know it is done (answered by the client itself: a
        command that fails ends a batch first); the output up to there."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\npwd\n")
        self.proc.stdin.flush()
        lines = []
        while "Remote working directory" not in (line := self.proc.stdout.readline()):
            assert line, "".join(lines)  # the client ended
            lines.append(line)
        return "".join(lines)

    def alive(self) -> bool:
        """Whether the connection still answers (`sftp -b` notices a cut one on its next
        command, and exits)."""
        try:
            self.run("ls")
        except AssertionError:
            return False
        return True

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


def test_connection_caps_hold_for_the_port_across_processes(make_server):
    server = make_server(ROSTERDROP_SFTP_PROCESSES="2", ROSTERDROP_SFTP_MAX_CONNECTIONS_PER_IP="2")
    assert "(2 processes)" in server.output
    first, second = Session(server, "alpha"), Session(server, "beta")
    # One connection in each process: each process alone is under the cap.
    assert sorted(connections_of(server).values()) == [1, 1]
    assert server.openssh("pwd\n", check=False).returncode != 0
    # Audited by the process that refused it, as the client is told.
    [refused] = server.wait_for(lambda: server.audit("connection_refused"), 30, "the audit")
    assert refused["detail"] == "too many connections from this address"
    first.close()
    # The slot is given back once the process serving it tells the acceptor it ended.
    server.wait_for(lambda: server.openssh("pwd\n", check=False).returncode == 0, 30, "a slot")
    second.close()


def test_a_ban_is_seen_by_every_process(make_server):
    server = make_server(
        ROSTERDROP_SFTP_PROCESSES="2",
        ROSTERDROP_SFTP_MAX_AUTH_TRIES="10",
        ROSTERDROP_DEFENDER_THRESHOLD="3",
        ROSTERDROP_SFTP_LOGIN_DELAY="0",
    )
    # A connection accepted before the ban, held by one process, its login not yet tried.
    early = socket.create_connection(("127.0.0.1", server.port))
    server.wait_for(lambda: sorted(connections_of(server).values()) == [0, 1], 30, "handed")
    holder = next(pid for pid, n in connections_of(server).items() if n)

    async def fail_three_times() -> set[int]:
        """Wrong passwords on a connection of the other process (the one serving fewer)."""
        seen = set()

        class Wrong(asyncssh.SSHClient):
            def password_auth_requested(self) -> str:
                seen.update(pid for pid, n in connections_of(server).items() if n)
                return "wrong"

        with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied, OSError)):
            await server.connect(
                "alpha", client_factory=Wrong, client_keys=None, preferred_auth="password"
            )
        return seen

    assert asyncio.run(fail_three_times()) == set(sftp_processes(server))
    [ban] = server.query("select * from intake_ban where banned_until is not null")
    assert ban["ip"] == "127.0.0.1"

    async def login_on(sock: socket.socket | None) -> None:
        async with server.connect(sock=sock) if sock else server.connect():
            pass

    # The process that held the early connection refuses its login: it reads the ban...
    with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied)):
        asyncio.run(login_on(early))
    assert server.audit("login_refused")[-1]["detail"] == "IP is banned"
    assert holder in sftp_processes(server)
    # ...and new connections are closed before the SSH version, whichever would serve them.
    for _ in range(3):
        with pytest.raises((asyncssh.DisconnectError, ConnectionError, OSError)):
            asyncio.run(login_on(None))


def uploads_through_two_processes(server: Server, tmp_path: Path, query=None) -> None:
    """The school-small roster as one zip, sent by alpha and by beta on connections held by
    the two worker processes; each is imported once, at once. `query`: the database's rows
    (the server's SQLite unless given)."""
    query = query or server.query
    roster = tmp_path / "roster.zip"
    with zipfile.ZipFile(roster, "w") as z:
        for member in sorted(SCHOOL_SMALL.iterdir()):
            z.write(member, member.name)
    alpha, beta = Session(server, "alpha"), Session(server, "beta")
    assert sorted(connections_of(server).values()) == [1, 1]
    for session in (alpha, beta):
        session.run(f"put {roster}")
    began = time.monotonic()
    uploads_sql = "select login, sha256, status, district_id from inbox_upload"
    server.wait_for(
        lambda: [u["status"] for u in query(uploads_sql)] == ["imported", "imported"],
        120,
        "imports",
    )
    assert time.monotonic() - began < int(NO_POLL) / 2
    uploads = query(uploads_sql)
    assert sorted(u["login"] for u in uploads) == ["alpha", "beta"]
    assert {u["sha256"] for u in uploads} == {sha256(roster)}
    syncs = "select status, district_id from ingest_sync order by id"
    assert [s["status"] for s in query(syncs)] == ["applied", "applied"]
    assert sorted(s["district_id"] for s in query(syncs)) == sorted(
        u["district_id"] for u in uploads
    )
    alpha.close()
    beta.close()


def test_uploads_through_any_process_are_imported_once(make_server, tmp_path):
    """SQLite: the import worker is a thread of serve's own process."""
    server = make_server(ROSTERDROP_SFTP_PROCESSES="2", ROSTERDROP_WORKER_POLL_SECONDS=NO_POLL)
    uploads_through_two_processes(server, tmp_path)


def test_uploads_through_any_process_are_imported_once_on_postgresql(
    make_server, postgres_database, tmp_path
):
    """PostgreSQL: the imports are jobs of the database's queue."""
    url, _ = postgres_database
    server = make_server(
        ROSTERDROP_DATABASE_URL=url,
        ROSTERDROP_SFTP_PROCESSES="2",
        ROSTERDROP_WORKER_POLL_SECONDS=NO_POLL,
    )
    server.cli("shell", "-c", SETUP.format(key=f"{server.key}.pub"))
    keys = server.cli("hostkey", "--public").splitlines()  # made in the database at start
    server.known_hosts.write_text("".join(f"[127.0.0.1]:{server.port} {k}\n" for k in keys))

    def query(sql: str) -> list[dict]:
        with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as db:
            return db.execute(sql).fetchall()

    uploads_through_two_processes(server, tmp_path, query)
    # Stopped once the worker has built the syncs' search indexes (after the syncs): a stop
    # in the middle of a build waits for it.
    indexes = 'select "index" from ingest_sync'
    server.wait_for(lambda: {s["index"] for s in query(indexes)} == {"built"}, 120, "indexes")


def test_a_worker_process_that_dies_is_replaced_and_its_slots_given_back(make_server):
    server = make_server(ROSTERDROP_SFTP_PROCESSES="2", ROSTERDROP_SFTP_MAX_CONNECTIONS_PER_IP="2")
    sessions = [Session(server, "alpha"), Session(server, "beta")]
    before = set(sftp_processes(server))
    assert sorted(connections_of(server).values()) == [1, 1]
    os.kill(next(iter(before)), signal.SIGKILL)
    server.wait_for(lambda: len(set(sftp_processes(server)) - before) == 1, 60, "a new process")
    # The dead one is reaped by a thread of its own, which may run after the new one started
    # (a zombie is still a child: 3 == 2 once at load ~25).
    server.wait_for(lambda: len(sftp_processes(server)) == 2, 60, "the dead one reaped")
    [survivor] = [s for s in sessions if s.alive()]  # the other one's connection was cut
    # The dead process's connection no longer counts toward the cap of two per address.
    third = Session(server, "alpha")
    third.close()
    survivor.close()


def test_worker_processes_never_import_from_the_folder_serve_was_started_in(
    make_server, tmp_path, monkeypatch
):
    """The workers are `python -c` processes, which put their working folder first on the
    import path: a `django.py` (or `rosterdrop/`) lying in the folder an operator started serve
    from would have been run in every SFTP process. They start with -P (no such path)."""
    folder = tmp_path / "started-here"
    folder.mkdir()
    marker = tmp_path / "imported"
    (folder / "django.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.chdir(folder)
    server = make_server(ROSTERDROP_SFTP_PROCESSES="2")
    assert "(2 processes)" in server.output
    assert len(sftp_processes(server)) == 2
    assert server.openssh("pwd\n").returncode == 0
    assert not marker.exists()
