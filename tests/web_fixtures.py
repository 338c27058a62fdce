"""People and districts for the console, API and mail tests: an operator, and an admin in each
of two districts, with imports to look at."""

import pytest
from django.contrib.auth import get_user_model
from helpers import rows, write

from rosterdrop.accounts.models import Profile
from rosterdrop.districts.models import District
from rosterdrop.ingest.syncs import import_path

PASSWORD = "a long enough password"


def make_user(email: str, district: District | None = None, operator: bool = False):
    user = get_user_model().objects.create_user(email, email, PASSWORD, is_staff=operator)
    Profile.objects.create(user=user, district=district)
    return user


@pytest.fixture
def other(db) -> District:
    return District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")


@pytest.fixture
def operator(db):
    return make_user("ops@vendor.test", operator=True)


@pytest.fixture
def admin(district):
    return make_user("data@springfield.test", district)


@pytest.fixture
def other_admin(other):
    return make_user("data@shelbyville.test", other)


def held_sync(district, school):
    """Import the school, then send half the enrollments: held by the removal guard."""
    import_path(district, school)
    table = rows(school / "enrollments.csv")
    write(school / "enrollments.csv", table[: len(table) // 2])
    sync = import_path(district, school)
    assert sync.status == "held"
    return sync


@pytest.fixture
def import_inline(settings):
    """Web imports and approvals in the request itself, so a test sees their outcome at once."""
    settings.WEB_IMPORT_IN_BACKGROUND = False


def signed_in(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client
