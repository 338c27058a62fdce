"""FTPS clients for the tests: lftp and curl as districts run them, ftplib for protocol probes.

The servers are the ones of sftp_fixtures (every `rosterdrop serve` there also serves FTPS).
Clients trust the server's own certificate file (its SAN covers 127.0.0.1), so TLS is verified.
"""

import ftplib
import socket
import ssl
import subprocess
from pathlib import Path

from sftp_fixtures import PASSWORD, Server

DOTTED = "alpha.admin.district.st"  # the login alpha_admin_district_st, as Istation writes it


def cert(server: Server) -> Path:
    return server.ftps_cert()


def port(server: Server, implicit: bool) -> int:
    return server.ftps_implicit_port if implicit else server.ftps_port


def curl(
    server: Server, path: Path | str, implicit: bool, name: str = "", login: str = DOTTED
) -> subprocess.CompletedProcess:
    """curl's two FTPS forms: ftps:// is implicit TLS, ftp:// with --ssl-reqd is AUTH TLS.
    `path` may be curl's {a,b,...} glob: several files over one connection."""
    scheme, extra = ("ftps", []) if implicit else ("ftp", ["--ssl-reqd"])
    url = f"{scheme}://127.0.0.1:{port(server, implicit)}/{name}"
    cmd = ["curl", "-sS", "--fail", "--max-time", "60", "--cacert", str(cert(server)), *extra]
    cmd += ["--user", f"{login}:{PASSWORD}", "-T", str(path), url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def lftp(
    server: Server, commands: str, implicit: bool, login: str = DOTTED
) -> subprocess.CompletedProcess:
    """lftp with TLS forced on control and data, and the server certificate verified."""
    url = f"{'ftps' if implicit else 'ftp'}://127.0.0.1:{port(server, implicit)}"
    script = (
        "set net:max-retries 1; set net:timeout 20; "
        f"set ssl:ca-file {cert(server)}; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; "
        f"open -u '{login},{PASSWORD}' {url}; {commands}"
    )
    return subprocess.run(["lftp", "-c", script], capture_output=True, text=True, timeout=120)


def tls_context(server: Server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert(server)))


class ImplicitFTP(ftplib.FTP_TLS):
    """ftplib only speaks AUTH TLS: wrap the control socket before reading the greeting."""

    def connect(self, host: str = "", port: int = 0, timeout: float = 10, source_address=None):
        self.host, self.port, self.timeout = host, port, timeout
        raw = socket.create_connection((host, port), timeout)
        self.sock = self.context.wrap_socket(raw, server_hostname=host)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def ftp(
    server: Server, implicit: bool = False, login: str | None = DOTTED, context=None
) -> ftplib.FTP_TLS:
    """A connected ftplib client (logged in, data protected) unless login is None."""
    client = (ImplicitFTP if implicit else ftplib.FTP_TLS)(
        context=context or tls_context(server), timeout=10
    )
    client.connect("127.0.0.1", port(server, implicit))
    if login is not None:
        client.login(login, PASSWORD)
        client.prot_p()
    return client


def plain(server: Server, implicit: bool = False) -> socket.socket:
    """A plain TCP connection to an FTPS port, for probes below the client libraries."""
    return socket.create_connection(("127.0.0.1", port(server, implicit)), timeout=10)


def read_reply(sock) -> str:
    """One FTP reply (possibly multi-line) from a socket or SSL socket."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
        lines = data.decode().split("\r\n")
        last = [line for line in lines[:-1] if line[:3].isdigit() and line[3:4] == " "]
        if last:
            return data.decode()
