"""Web sign-ins go to the same append-only audit log as SFTP logins."""

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from rosterdrop.audit.models import AuditEvent, record


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs) -> None:
    record(AuditEvent.Kind.LOGIN_OK, login=user.get_username(), ip=client_ip(request), detail="web")


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    record(
        AuditEvent.Kind.LOGIN_FAILED,
        login=str(credentials.get("username", "")),
        ip=client_ip(request),
        detail="web",
    )
