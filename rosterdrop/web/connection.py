"""What a district needs to configure its SFTP or FTPS client: address, logins, fingerprints."""

import logging
from dataclasses import dataclass, field

from django.conf import settings

from rosterdrop.intake import hostkey, tlscert
from rosterdrop.intake.models import Login

log = logging.getLogger(__name__)


@dataclass
class Connection:
    host: str
    port: int
    fingerprint: str
    logins: list = field(default_factory=list)  # intake.models.Login rows
    # The other host keys, for clients that know no ed25519: (algorithm, fingerprint).
    other_fingerprints: list = field(default_factory=list)
    # FTPS, when the deployment runs it: ports, and the certificate's SHA256 fingerprint.
    ftps_port: int = 0
    ftps_implicit_port: int = 0
    ftps_fingerprint: str = ""

    @property
    def dotted_logins(self) -> list[str]:
        """The same logins as FTPS clients may write them (name.admin.district.st)."""
        return [login.name.replace("_", ".") for login in self.logins]


def connection_for(district, request) -> Connection:
    host = settings.SFTP_PUBLIC_HOST or request.get_host().rsplit(":", 1)[0]
    port = settings.SFTP_PUBLIC_PORT or settings.SFTP_PORT
    result = Connection(host=host, port=port, fingerprint="")
    result.logins = list(Login.objects.filter(district=district))
    try:
        (_, result.fingerprint), *result.other_fingerprints = hostkey.fingerprints()
    except Exception:
        log.exception("cannot read the SFTP host key")
    if settings.FTPS_ENABLED:
        result.ftps_port, result.ftps_implicit_port = (
            settings.FTPS_PORT,
            settings.FTPS_IMPLICIT_PORT,
        )
        if tlscert.made():  # by the FTPS server's first start
            try:
                result.ftps_fingerprint = tlscert.fingerprint()
            except Exception:
                log.exception("cannot read the FTPS certificate")
    return result
