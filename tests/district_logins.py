"""Districts with SFTP logins, made in a new deployment's database by `rosterdrop shell -c`: the
deployment tests (test_queue, test_cluster) and bench/cluster.py, which times the cluster test's
deployment next to a single serve, set their districts up alike."""

from pathlib import Path

SCRIPT = """
from rosterdrop.districts.models import District
from rosterdrop.intake.models import Login
key = open({key!r}).read()
password = {password!r}
for slug in {slugs!r}:
    d = District.objects.create(slug=slug, name=slug, format="oneroster-1.1",
                                quiet_period_seconds=1)
    login = Login(district=d, name=slug)
    if password:
        login.set_password(password)
    login.add_public_key(key)
    login.save()
"""


def district_logins(slugs: list[str], public_key: Path, password: str = "") -> str:
    """A OneRoster 1.1 district per slug (a 1-second quiet period), each with a login of its
    name that holds `public_key` (an OpenSSH .pub file) and, if given, `password`."""
    return SCRIPT.format(slugs=slugs, key=str(public_key), password=password)
