"""SFTP logins of districts, the per-IP defender state that bans brute-force sources, and the
host keys and certificate every front end presents."""

import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from rosterdrop.districts.models import District
from rosterdrop.networks import ip_in, parse_networks

if TYPE_CHECKING:  # asyncssh is imported where keys are read, not with the models
    import asyncssh

# argon2id with SFTPGo's parameters (64 MiB, 1 iteration, parallelism 2).
_hasher = PasswordHasher(time_cost=1, memory_cost=64 * 1024, parallelism=2)


def login_name(person: str, district: District, state: str = "") -> str:
    """A login name from the configured scheme (Istation style: name_admin_district_st).

    The scheme is a template over {person}, {district} (the slug) and {state}; each part is
    lower-cased and reduced to letters and digits, and an empty part takes its separator along.
    """
    parts = {
        "person": _slug_part(person),
        "district": _slug_part(district.slug),
        "state": _slug_part(state),
    }
    name = settings.SFTP_LOGIN_SCHEME.format(**parts)
    return re.sub(r"_{2,}", "_", name).strip("_")


def _slug_part(text: str) -> str:
    """ "Ana María" -> "anamaria": accents dropped, then only letters and digits."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", ascii_text.lower())


# What a login may do in its folder besides uploading (SFTPGo's per-user permissions).
PERMISSIONS = {
    "list": "list its folder's files",
    "download": "download them",
    "delete": "delete them",
}


def all_permissions() -> list[str]:
    """Every permission: what logins made before permissions existed could already do."""
    return list(PERMISSIONS)


class Login(models.Model):
    district = models.ForeignKey(District, on_delete=models.CASCADE, related_name="sftp_logins")
    name = models.CharField(max_length=150, unique=True)
    password_hash = models.CharField(max_length=200, blank=True)
    public_keys = models.TextField(blank=True, help_text="OpenSSH authorized_keys lines.")
    allowed_ips = models.TextField(blank=True, help_text="IPs or CIDR networks; blank = any.")
    active = models.BooleanField(default=True)
    permissions = models.JSONField(
        default=all_permissions,
        blank=True,
        help_text="Beyond uploading: any of list, download, delete.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            parse_networks(self.allowed_ips)
        except ValueError as exc:
            raise ValidationError({"allowed_ips": str(exc)}) from exc

    def set_password(self, raw: str) -> None:
        self.password_hash = _hasher.hash(raw)

    def check_password(self, raw: str) -> bool:
        if not self.password_hash:
            return False
        try:
            return _hasher.verify(self.password_hash, raw)
        except (VerificationError, InvalidHashError):
            return False

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def ip_allowed(self, ip: str | None) -> bool:
        return not self.allowed_ips.strip() or ip_in(ip, parse_networks(self.allowed_ips))

    def authorized_keys(self) -> list["asyncssh.SSHKey"]:
        return _keys_from_text(self.public_keys)

    def add_public_key(self, line: str) -> str:
        """Add one key (validated); return its SHA256 fingerprint."""
        import asyncssh

        key = asyncssh.import_public_key(line.strip())
        text = key.export_public_key().decode().strip()
        if text not in self.public_keys.splitlines():
            self.public_keys = "\n".join([*self.public_keys.splitlines(), text]).strip()
        return key.get_fingerprint("sha256")


def _keys_from_text(text: str) -> list["asyncssh.SSHKey"]:
    import asyncssh

    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(asyncssh.import_public_key(line))
    return keys


class Ban(models.Model):
    """Defender state for one source IP: a failure score in a window, and a ban with expiry."""

    ip = models.GenericIPAddressField(unique=True)
    score = models.PositiveIntegerField(default=0)
    window_start = models.DateTimeField()
    banned_until = models.DateTimeField(null=True, blank=True)
    ban_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-banned_until"]

    def __str__(self) -> str:
        return self.ip

    def is_banned(self, now: datetime) -> bool:
        return self.banned_until is not None and self.banned_until > now


class ServerKey(models.Model):
    """A key every front end presents: an SSH host key (named by its algorithm) or the
    self-signed FTPS certificate ("ftps").

    Kept in the database rather than one machine's data folder, so that any number of front
    ends on one database show districts the same fingerprints. The first front end to start
    makes (or imports) each key; a second one starting at the same moment loses the insert
    and reads the winner's (`first_kept`)."""

    name = models.CharField(max_length=40, unique=True)
    private_key = models.TextField(help_text="PEM or OpenSSH private key.")
    public_key = models.TextField(blank=True, help_text="OpenSSH public key line (SSH keys).")
    certificate = models.TextField(blank=True, help_text="PEM certificate (FTPS).")
    imported_from = models.CharField(
        max_length=500, blank=True, help_text="The data folder file it came from, if any."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def first_kept(cls, name: str, make: Callable[[], "ServerKey"]) -> "ServerKey":
        """The stored key `name`, or the one `make` returns, stored unless another process
        stored one first (the unique name decides; the loser reads the winner's)."""
        found = cls.objects.filter(name=name).first()
        if found is not None:
            return found
        made = make()
        fields = {f: getattr(made, f) for f in ("private_key", "public_key", "certificate")}
        kept, _ = cls.objects.get_or_create(
            name=name, defaults={**fields, "imported_from": made.imported_from}
        )
        return kept
