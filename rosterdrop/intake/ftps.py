"""The FTPS front end: the same district logins, folders, inbox and defender as SFTP.

pyftpdlib speaks the protocol. What it leaves open (docs/reference/stack.md section 2) is closed
here:
TLS is required on the control and data channels (1.2 at least); implicit TLS (port 990 style)
is a small subclass; passive mode only, and data connections only from the control
connection's address; nothing a client pipelined behind AUTH TLS is run after the handshake;
and, because plain FTP cannot tell a finished upload from a cut one, an upload counts only
when its data connection ends with a TLS close_notify. Each client gets its own thread, since
password checks and storing an upload block.
"""

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from django.conf import settings
from django.db import connections
from OpenSSL import SSL
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.handlers.ftp.dispatchers import PassiveDTP
from pyftpdlib.handlers.ftps.data import TLS_DTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import ThreadedFTPServer

from rosterdrop.intake import auth, defender, folder, proxy_protocol, tlscert, writer
from rosterdrop.intake.models import Login
from rosterdrop.intake.transfer import Transfer

log = logging.getLogger(__name__)

# pyftpdlib permission letters: change folder, list, download, store, append, delete, rename,
# set time (ignored). No mkdir, rmdir or chmod: the folder stays flat.
PERMS = "elrwadfT"
# The letters of what a login may be given beyond uploading (intake.models.PERMISSIONS).
GRANTED = {"list": "l", "download": "r", "delete": "d"}


def perms_of(login: Login) -> str:
    return "".join(p for p in PERMS if p not in GRANTED.values()) + "".join(
        GRANTED[p] for p in login.permissions if p in GRANTED
    )


# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all of that kind).
CIPHERS = b"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL"
NOT_CLOSED = (
    "426 The data connection ended without a TLS close (close_notify), so the upload may be "
    "incomplete; it was not kept. Please send it again."
)


class _Perms:
    """The part of pyftpdlib's authorizer it still needs: logins are checked in ftp_PASS,
    which gives the session the signed-in login's permissions."""

    def __init__(self, perms: str = PERMS):
        self.perms = perms

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        return perm in self.perms

    def get_perms(self, username: str) -> str:
        return self.perms

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        return None

    def terminate_impersonation(self, username: str) -> None:
        return None


class DistrictFS(AbstractedFS):
    """A login's view: its district's flat folder as `/`, through the same rules as SFTP."""

    def __init__(self, root: str, cmd_channel: "FTPSHandler"):
        super().__init__(root, cmd_channel)
        self.home = Path(root)
        assert cmd_channel.login is not None  # made on a successful login (ftp_PASS)
        self.district = cmd_channel.login.district

    def _name(self, path: str) -> str:
        """The file name of a path ftp2fs gave ("" for the folder)."""
        return "" if path == self.root else os.path.basename(path)

    def _found(self, path: str) -> os.stat_result | None:
        return folder.lookup(self.district, self.home, self._name(path))

    def _lookup(self, path: str) -> os.stat_result:
        found = self._found(path)
        if found is None:
            raise folder.missing("No such file")
        return found

    def _exists(self, path: str) -> bool:
        return path == self.root or self._found(path) is not None

    def ftp2fs(self, ftppath: str) -> str:
        # Raises OSError for names SFTP refuses too; FTPSHandler answers those with 550.
        return str(folder.resolve(self.home, self.ftpnorm(ftppath))[1])

    def validpath(self, path: str) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([self.root, real]) == self.root

    def open(self, filename: str, mode: str) -> object:
        if "r" in mode and "+" not in mode:
            return folder.open_file(self.district, self.home, self._name(filename))
        if filename == self.root:
            raise folder.refused("Is a folder")
        channel = self.cmd_channel
        login = channel.login  # whoever started it, even if the session logs in again meanwhile
        upload = Transfer(
            login.district,
            os.path.basename(filename),
            "ftps",
            login.name,
            channel.remote_ip,
            append="a" in mode,
        )
        if "w" not in mode and self._exists(filename):
            # APPE or REST: start from the current content, as an SFTP resume does.
            upload.resume()
        return upload

    def mkstemp(self, *args, **kwargs):
        raise folder.refused("Unique names (STOU) are not offered")

    def chdir(self, path: str) -> None:
        if path != self.root:
            raise folder.missing("No such folder (this folder has no subfolders)")

    def mkdir(self, path: str) -> None:
        raise folder.refused("Folders cannot be created here")

    def rmdir(self, path: str) -> None:
        raise folder.refused("Folders cannot be removed here")

    def chmod(self, path: str, mode: int) -> None:
        raise folder.refused("Permissions cannot be changed here")

    def utime(self, path: str, timeval: float) -> None:
        """Ignored, like SFTP's setstat: MFMT after an upload must not fail it."""

    def listdir(self, path: str) -> list[str]:
        if path != self.root:
            raise folder.missing("Not a folder")
        return [name for name, _ in folder.listing(self.district, self.home)]

    def remove(self, path: str) -> None:
        if path == self.root:
            raise folder.refused("Is a folder")
        channel = self.cmd_channel
        folder.remove(
            self.district, self.home, self._name(path), channel.login.name, channel.remote_ip
        )

    # What listings, SIZE, MDTM and RNFR ask of a file: the folder's answer, not the disk's
    # (a shared folder's files are in storage).

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path) if path == self.root else self._lookup(path)

    def lstat(self, path: str) -> os.stat_result:
        return self.stat(path)

    def isfile(self, path: str) -> bool:
        return path != self.root and self._exists(path)

    def isdir(self, path: str) -> bool:
        return path == self.root

    def islink(self, path: str) -> bool:
        return False

    def lexists(self, path: str) -> bool:
        return self._exists(path)

    def getsize(self, path: str) -> int:
        return self._lookup(path).st_size

    def getmtime(self, path: str) -> float:
        return self._lookup(path).st_mtime

    def rename(self, src: str, dst: str) -> None:
        if self.root in (src, dst):
            raise folder.refused("Folders cannot be renamed")
        channel = self.cmd_channel
        login = channel.login
        folder.rename(
            login.district, Path(src), Path(dst), True, "ftps", login.name, channel.remote_ip
        )


class _DataChannel(TLS_DTPHandler):
    """A data connection: TLS 1.2 context, and an upload settled before its reply is sent."""

    _settled = False

    def secure_connection(self, ssl_context: SSL.Context) -> None:
        # TLS 1.3 sends session tickets after the handshake; a client that closes the data
        # connection without reading them makes the kernel reset it, losing the upload's tail
        # (seen with curl). TLS 1.2 has no post-handshake messages, so the data context caps it.
        super().secure_connection(self.cmd_channel.data_context)

    def _closed_by_tls(self) -> bool:
        sock = self.socket
        return isinstance(sock, SSL.Connection) and bool(
            sock.get_shutdown() & SSL.RECEIVED_SHUTDOWN
        )

    def handle_error(self) -> None:
        """A failed read or write (size cap, TLS error, reset): the upload is not kept."""
        if not self.receive:
            super().handle_error()
            return
        self._error = True  # no TLS shutdown on a broken connection
        failed = getattr(self.file_obj, "failed", "")
        if not failed:
            log.info("ftps data connection broke: %r", sys.exc_info()[1])
        self.transfer_finished = False
        self._resp = (f"552 {failed}." if failed else NOT_CLOSED, log.info)
        self.close()

    def close(self) -> None:
        if self.receive and isinstance(self.file_obj, Transfer) and not self._settled:
            self._settled = True
            clean = self.transfer_finished and self._closed_by_tls()
            if self.transfer_finished and not clean:
                self.transfer_finished = False
                self._resp = (NOT_CLOSED, log.info)
            reply = self.cmd_channel.settle(self.file_obj, clean)
            if reply:
                self._resp = (reply, log.info)
        super().close()


def proxied_client(sock: socket.socket, addr: tuple, what: str) -> tuple[str, int] | None:
    """The address a connection is from: the district's, from a trusted load balancer's
    PROXY header (proxy_protocol); None (closed, audited) when that header is missing."""
    peer = proxy_protocol.Client(addr[0], addr[1], False)
    try:
        client = proxy_protocol.read_blocking(sock, peer)
    except (proxy_protocol.Refused, OSError) as exc:
        sock.close()
        writer.later(auth.proxy_refused, peer.ip, str(exc), what)
        return None
    return client.ip, client.port


class _PassivePort(PassiveDTP):
    """A passive data port: behind a load balancer its connections carry a PROXY header too,
    whose address must be the control connection's (permit_foreign_addresses)."""

    def handle_accepted(self, sock: socket.socket, addr: tuple) -> None:
        client = proxied_client(sock, addr, "ftps data")
        if client is not None:
            super().handle_accepted(sock, client)


class FTPSHandler(TLS_FTPHandler):
    """One explicit-FTPS control connection (AUTH TLS before anything else)."""

    tls_control_required = True
    tls_data_required = True
    dtp_handler = _DataChannel
    passive_dtp = _PassivePort
    abstracted_fs = DistrictFS
    authorizer = _Perms()
    banner = "rosterdrop FTPS ready."
    unicode_errors = "strict"  # a name that is not UTF-8 gets 501, never a guessed name
    permit_foreign_addresses = False  # 425 for a data connection from another address
    # No active mode (PORT/EPRT: bounce attacks, NAT) and no STOU (unique names).
    proto_cmds = {
        cmd: spec
        for cmd, spec in TLS_FTPHandler.proto_cmds.items()
        if cmd not in ("PORT", "EPRT", "STOU", "SITE CHMOD")
    }
    data_context: SSL.Context
    login: Login | None = None
    remote_ip: str

    def __init__(self, conn, server, ioloop=None):
        super().__init__(conn, server, ioloop)
        self._current_type = "i"  # bytes kept exactly as sent unless a client asks for ASCII
        if self.connected:
            self.remote_ip = server.clients.get(conn.fileno(), self.remote_ip)
        self._first_read = True

    def handle_read(self) -> None:
        if self._first_read:
            self._first_read = False
            if self.refused_as_proxy_header():
                return
        super().handle_read()

    def refused_as_proxy_header(self) -> bool:
        """A PROXY header from an address not in ROSTERDROP_TRUSTED_PROXIES (a trusted one's
        was read before this handler began): closed, never believed."""
        if isinstance(self.socket, SSL.Connection):  # implicit TLS: its handshake fails it
            return False
        try:
            first = self.socket.recv(16, socket.MSG_PEEK)
        except OSError:
            return False
        if not proxy_protocol.looks_like_header(first):
            return False
        auth.proxy_refused(self.remote_ip, "a PROXY header from an untrusted address", "ftps")
        self.close()
        return True

    # These two run in the accepting thread (pyftpdlib's handle_accepted): their audit rows
    # and scores are written in the writing thread, which may wait for an import's commit.
    def handle_max_cons(self) -> None:
        writer.later(auth.connection_refused, self.remote_ip, "too many connections", False)
        super().handle_max_cons()

    def handle_max_cons_per_ip(self) -> None:
        reason = "too many connections from this address"
        writer.later(auth.connection_refused, self.remote_ip, reason, True)
        super().handle_max_cons_per_ip()

    def close(self) -> None:
        queued = getattr(self, "_in_dtp_queue", None)  # a STOR whose data never connected
        super().close()
        if queued and isinstance(queued[0], Transfer):
            queued[0].discard()

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        try:
            super().pre_process_command(line, cmd, arg)
        except OSError as exc:  # a refused path: answer it, keep the session
            self.respond(f"550 {exc.strerror or exc}.")

    def ftp_AUTH(self, line: str) -> None:
        # CVE-2011-1575: whatever arrived after AUTH in the same plaintext read must never run
        # as if it came through TLS.
        self.ac_in_buffer = b""
        self._in_buffer: list[bytes] = []
        self._in_buffer_len = 0
        super().ftp_AUTH(line)

    def ftp_PASS(self, line: str) -> None:
        if self.authenticated or not self.username:
            super().ftp_PASS(line)  # the 503 replies
            return
        username, ip = self.username, self.remote_ip
        if auth.refuse_banned(username, ip):
            self.close()
            return
        login = auth.find_login(username)
        if login is not None and login.ip_allowed(ip) and login.check_password(line):
            self.login = login
            self.authorizer = _Perms(perms_of(login))
            auth.succeeded(login, ip, f"{self.protocol}, password")
            home = str(folder.open_root(login.district.slug))
            self.handle_auth_success(home, "", "Login successful.")
            return
        if auth.failed(username, login, ip, "password", self.protocol):
            self.attempted_logins = self.max_login_attempts  # banned: disconnect now
        self.handle_auth_failed("", "")

    def flush_account(self) -> None:
        super().flush_account()
        self.login = None
        self.authorizer = FTPSHandler.authorizer

    @property
    def protocol(self) -> str:
        return "ftps"

    def settle(self, upload: Transfer, clean: bool) -> str:
        """Keep a cleanly closed upload (the reply stays 226) or drop it; return a new reply
        when the outcome differs from the data channel's own."""
        try:
            upload.finish(clean, "data connection ended before a clean TLS close")
        except OSError as exc:
            return f"451 {exc.strerror or exc}."
        return ""


class ImplicitFTPSHandler(FTPSHandler):
    """Implicit FTPS: TLS from the first byte, then the greeting; plain FTP gets nothing."""

    def handle(self) -> None:
        self.secure_connection(self.ssl_context)

    def handle_ssl_established(self) -> None:
        TLS_FTPHandler.handle(self)  # the greeting

    @property
    def protocol(self) -> str:
        return "ftps implicit"


class _Server(ThreadedFTPServer):
    """One listening port; each client connection runs in its own thread (`serving`: those
    alive, which a graceful stop waits for)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.serving: set[threading.Thread] = set()
        self.clients: dict[int, str] = {}  # socket -> the district's address, for the handler

    def handle_accepted(self, sock: socket.socket, addr: tuple) -> None:
        # The header is read here, in the accepting thread, before the greeting: a balancer
        # sends it with the connection (proxy_protocol.TIMEOUT bounds a faulty one).
        fileno = sock.fileno()
        client = proxied_client(sock, addr, "ftps")
        if client is None:
            return
        if defender.is_banned(client[0]):
            writer.later(auth.banned, "", client[0])
            # Closed here, before a handler exists: no greeting, no TLS handshake, and no
            # thread (pyftpdlib starts one for any handler handle() leaves, even closed, and
            # it served whatever socket reused the descriptor next, until the process ended).
            sock.close()
            return
        self.clients[fileno] = client[0]
        try:
            super().handle_accepted(sock, client)
        finally:
            self.clients.pop(fileno, None)

    def _loop(self, handler: FTPSHandler) -> None:
        self.serving.add(threading.current_thread())
        try:
            super()._loop(handler)
        finally:
            connections.close_all()  # this thread's database connection
            self.serving.discard(threading.current_thread())


def tls_context(
    chain: list[x509.Certificate], key: PrivateKeyTypes, data: bool = False
) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    if data:
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    )
    ctx.set_cipher_list(CIPHERS)
    ctx.use_certificate(chain[0])
    for extra in chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(key)  # type: ignore[arg-type]  # pyOpenSSL takes the key types it signs with
    ctx.check_privatekey()
    return ctx


def passive_ports(text: str) -> range:
    """'50000-50100' (or one port) as a range for pyftpdlib."""
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


class FTPSService:
    """Both FTPS listeners on one IO loop, served by `run` in a thread of `rosterdrop serve`."""

    def __init__(self, host: str, port: int, implicit_port: int):
        chain_pem, key_pem = tlscert.load_pem()
        chain = x509.load_pem_x509_certificates(chain_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        attrs = {
            "ssl_context": tls_context(chain, key),
            "data_context": tls_context(chain, key, data=True),
            "passive_ports": passive_ports(settings.FTPS_PASSIVE_PORTS),
            "masquerade_address": settings.FTPS_MASQUERADE_ADDRESS or None,
            "timeout": settings.FTPS_IDLE_TIMEOUT,
            "auth_failed_timeout": settings.SFTP_LOGIN_DELAY,
            "max_login_attempts": settings.FTPS_MAX_LOGIN_ATTEMPTS,
        }
        self.ioloop = IOLoop()
        self.servers = []
        for address, base in (
            ((host, port), FTPSHandler),
            ((host, implicit_port), ImplicitFTPSHandler),
        ):
            handler = type(base.__name__, (base,), dict(attrs))
            server = _Server(address, handler, ioloop=self.ioloop)
            server.max_cons = settings.SFTP_MAX_CONNECTIONS
            server.max_cons_per_ip = settings.SFTP_MAX_CONNECTIONS_PER_IP
            self.servers.append(server)

    def run(self, stop: threading.Event, grace: float = 0.0) -> None:
        """Serve until `stop`; then accept nothing more and give the connections left `grace`
        seconds to end (a transfer in flight finishes) before closing them."""
        try:
            while not stop.is_set():
                self.ioloop.loop(timeout=0.5, blocking=False)
            for server in self.servers:
                server.close()  # the listening socket only
            deadline = time.monotonic() + grace
            while any(s.serving for s in self.servers) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            for server in self.servers:
                server.close_all()
