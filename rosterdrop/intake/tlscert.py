"""The FTPS certificate: the operator's, or a self-signed one made once and kept in the database.

Districts pin a self-signed certificate by its SHA256 fingerprint (as they pin the SSH host key),
so it is created only once, survives restarts and is the same on every front end; one an older
install made in its data folder is imported on the first start.
"""

import datetime
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.conf import settings

from rosterdrop.intake.models import ServerKey

VALID_DAYS = 3650
NAME = "ftps"


def operator_files() -> tuple[Path, Path] | None:
    """(certificate chain, private key) files the operator configured; an operator's key may
    sit in the chain file. They are the operator's to put on every front end."""
    if not settings.FTPS_CERT_FILE:
        return None
    cert = Path(settings.FTPS_CERT_FILE)
    return cert, Path(settings.FTPS_KEY_FILE or cert)


def data_folder_files() -> tuple[Path, Path]:
    """Where a data folder kept the self-signed certificate before the database did."""
    return settings.DATA_DIR / "ftps_cert.pem", settings.DATA_DIR / "ftps_key.pem"


def load_pem() -> tuple[bytes, bytes]:
    """(certificate chain, private key) as PEM: the operator's files, or the self-signed pair
    every front end shares through the database (made, or imported from the data folder, by
    the first front end to start)."""
    files = operator_files()
    if files is None:
        kept = ServerKey.first_kept(NAME, _made)
        return kept.certificate.encode(), kept.private_key.encode()
    cert_path, key_path = files
    if not cert_path.exists():
        raise FileNotFoundError(f"FTPS certificate {cert_path} does not exist")
    return cert_path.read_bytes(), key_path.read_bytes()


def load_or_create() -> x509.Certificate:
    return x509.load_pem_x509_certificate(load_pem()[0])


def made() -> bool:
    files = operator_files()
    return files[0].exists() if files else ServerKey.objects.filter(name=NAME).exists()


def where() -> str:
    """Where the certificate comes from, as the commands print it."""
    files = operator_files()
    return str(files[0]) if files else "database"


def _made() -> ServerKey:
    cert_path, key_path = data_folder_files()
    if cert_path.exists() and key_path.exists():
        cert_pem, key_pem, source = cert_path.read_bytes(), key_path.read_bytes(), str(cert_path)
    else:
        cert_pem, key_pem = _create()
        source = ""
    return ServerKey(
        name=NAME,
        private_key=key_pem.decode(),
        certificate=cert_pem.decode(),
        imported_from=source,
    )


def _create() -> tuple[bytes, bytes]:
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
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(cert: x509.Certificate | None = None) -> str:
    """The certificate's SHA256 fingerprint as FTPS clients show it: SHA256:AB:CD:..."""
    digest = (cert or load_or_create()).fingerprint(hashes.SHA256())
    return "SHA256:" + ":".join(f"{b:02X}" for b in digest)
