"""The FTPS certificate: the operator's, or a self-signed one made once and kept in the data folder.

Districts pin a self-signed certificate by its SHA256 fingerprint (as they pin the SSH host key),
so it is created only once and survives restarts.
"""

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.conf import settings

VALID_DAYS = 3650


def paths() -> tuple[Path, Path]:
    """(certificate chain, private key) files; an operator's key may sit in the chain file."""
    if settings.FTPS_CERT_FILE:
        cert = Path(settings.FTPS_CERT_FILE)
        return cert, Path(settings.FTPS_KEY_FILE or cert)
    return settings.DATA_DIR / "ftps_cert.pem", settings.DATA_DIR / "ftps_key.pem"


def load_or_create() -> x509.Certificate:
    cert_path, key_path = paths()
    if not cert_path.exists():
        if settings.FTPS_CERT_FILE:
            raise FileNotFoundError(f"FTPS certificate {cert_path} does not exist")
        _create(cert_path, key_path)
    return x509.load_pem_x509_certificate(cert_path.read_bytes())


def _create(cert_path: Path, key_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost")]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def fingerprint(cert: x509.Certificate | None = None) -> str:
    """The certificate's SHA256 fingerprint as FTPS clients show it: SHA256:AB:CD:..."""
    digest = (cert or load_or_create()).fingerprint(hashes.SHA256())
    return "SHA256:" + ":".join(f"{b:02X}" for b in digest)
