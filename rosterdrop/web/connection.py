"""What a district needs to configure its SFTP client, from the intake app when present."""

import logging
from dataclasses import dataclass, field

from django.conf import settings

log = logging.getLogger(__name__)


@dataclass
class Connection:
    host: str
    port: int
    fingerprint: str
    logins: list = field(default_factory=list)  # intake.models.Login rows


def connection_for(district, request) -> Connection:
    host = settings.SFTP_PUBLIC_HOST or request.get_host().rsplit(":", 1)[0]
    port = settings.SFTP_PUBLIC_PORT or settings.SFTP_PORT
    result = Connection(host=host, port=port, fingerprint="")
    try:
        from rosterdrop.intake import hostkey
        from rosterdrop.intake.models import Login
    except ImportError:  # a deployment without the SFTP front end
        return result
    result.logins = list(Login.objects.filter(district=district))
    try:
        result.fingerprint = hostkey.fingerprint()
    except Exception:
        log.exception("cannot read the SFTP host key")
    return result
