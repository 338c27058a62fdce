"""Login decisions shared by the SFTP and FTPS front ends: one account, one set of rules.

Finding the login, scoring failures for the defender and writing the audit rows are the same
whatever protocol the district uses; only how a refusal is sent back differs per protocol.
"""

from django.conf import settings

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.intake import defender
from rosterdrop.intake.models import Login


def find_login(username: str) -> Login | None:
    """The active login named `username`; the dotted form (Istation writes name.admin.district.st
    for FTPS) finds the same account as name_admin_district_st."""
    names = [username, username.replace(".", "_")]
    logins = Login.objects.select_related("district").filter(name__in=names, active=True)
    return min(logins, key=lambda login: names.index(login.name), default=None)


def refuse_banned(username: str, ip: str | None) -> bool:
    """True (and audited) when the source IP is banned: the connection must end unanswered."""
    if not defender.is_banned(ip):
        return False
    banned(username, ip)
    return True


def banned(username: str, ip: str | None) -> None:
    """Audit a connection refused because its address is banned (defender.is_banned)."""
    record(AuditEvent.Kind.LOGIN_REFUSED, login=username, ip=ip, detail="IP is banned")


def failed(username: str, login: Login | None, ip: str | None, method: str, protocol: str) -> bool:
    """Audit one failed attempt and score it; True when it got the source IP banned."""
    if login is None:
        reason, points = "unknown login", settings.DEFENDER_SCORE_INVALID_USER
    elif not login.ip_allowed(ip):
        reason, points = "address not allowed for this login", settings.DEFENDER_SCORE_FAILED
    else:
        reason = f"wrong {method}"
        points = settings.DEFENDER_SCORE_FAILED if method == "password" else 0
    record(AuditEvent.Kind.LOGIN_FAILED, login=username, ip=ip, detail=f"{reason} ({protocol})")
    return defender.add_score(ip, points, f"failed logins ({reason})")


def succeeded(login: Login, ip: str | None, how: str) -> None:
    detail = f"{how}, district {login.district.slug}"
    record(AuditEvent.Kind.LOGIN_OK, login=login.name, ip=ip, detail=detail)


def proxy_refused(ip: str | None, reason: str, protocol: str) -> None:
    """A connection from a trusted load balancer without a valid PROXY header, or one that
    sent a header without being trusted: closed, and audited (no defender points: the
    balancer's address is everyone's)."""
    detail = f"{reason} ({protocol}; ROSTERDROP_TRUSTED_PROXIES)"
    record(AuditEvent.Kind.CONNECTION_REFUSED, ip=ip, detail=detail)


def connection_refused(ip: str | None, reason: str, scored: bool) -> None:
    """Too many connections: audited; scored like SFTPGo's score_limit_exceeded only when the
    source itself went past its own limit (per address), never for the global cap, which
    other clients filled: a district retrying then would be banned for their doing."""
    record(AuditEvent.Kind.CONNECTION_REFUSED, ip=ip, detail=reason)
    if scored:
        defender.add_score(ip, settings.DEFENDER_SCORE_LIMIT, reason)
