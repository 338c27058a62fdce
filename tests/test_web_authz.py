"""Who may open what: a district admin sees only their district (404 elsewhere), only operators
decide held syncs, forms need CSRF, sign-in is throttled, cookies are locked down."""

import pytest
from django.test import Client
from django.urls import reverse
from web_fixtures import PASSWORD, held_sync, signed_in

from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)

DISTRICT_PAGES = ("district", "uploads", "syncs", "sis", "roster", "assistant", "why", "wizard")


def test_signed_out_visitors_are_sent_to_sign_in(district):
    response = Client().get(reverse("web:district", args=[district.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_district_admin_sees_own_district_only(district, other, admin, school):
    client = signed_in(admin)
    for name in DISTRICT_PAGES:
        assert client.get(reverse(f"web:{name}", args=[district.slug])).status_code == 200
        assert client.get(reverse(f"web:{name}", args=[other.slug])).status_code == 404
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == f"/d/{district.slug}/"


def test_district_admin_cannot_reach_other_districts_objects(district, other, admin, school):
    theirs = import_path(other, school)
    upload = theirs.uploads.first()
    client = signed_in(admin)
    # Through the other district's URLs, and by swapping IDs into their own district's URLs.
    for slug in (other.slug, district.slug):
        for name, pk in (("sync", theirs.pk), ("issues_csv", theirs.pk), ("upload_raw", upload.pk)):
            assert client.get(reverse(f"web:{name}", args=[slug, pk])).status_code == 404
        assert client.post(reverse("web:discard", args=[slug, theirs.pk])).status_code in (403, 404)
    record = f"/d/{other.slug}/roster/users/{records(theirs.district, 'users').first().sourced_id}"
    assert client.get(record).status_code == 404


def test_only_operators_decide_held_syncs(district, admin, operator, school):
    sync = held_sync(district, school)
    assert (
        signed_in(admin).post(reverse("web:discard", args=[district.slug, sync.pk])).status_code
        == 403
    )
    sync.refresh_from_db()
    assert sync.status == "held"
    response = signed_in(operator).post(reverse("web:discard", args=[district.slug, sync.pk]))
    assert response.status_code == 302
    sync.refresh_from_db()
    assert sync.status == "discarded" and sync.decided_by == "ops@vendor.test"


def test_operator_sees_every_district(district, other, operator):
    client = signed_in(operator)
    page = client.get("/")
    assert page.status_code == 200
    assert b"Springfield" in page.content and b"Shelbyville" in page.content
    assert client.get(reverse("web:district", args=[other.slug])).status_code == 200


def test_forms_refuse_posts_without_csrf_token(district, operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post(reverse("web:subscribe", args=[district.slug]), {"email": "a@b.test"})
    assert response.status_code == 403
    assert not district.subscriptions.exists()


def test_sign_in_is_throttled_after_repeated_failures(admin, settings):
    client = Client()
    for attempt in range(1, settings.AXES_FAILURE_LIMIT + 1):
        bad = client.post("/accounts/login/", {"username": admin.username, "password": "nope"})
        # The form again with a message, until the limit is reached.
        assert bad.status_code == (429 if attempt == settings.AXES_FAILURE_LIMIT else 200)
    locked = client.post("/accounts/login/", {"username": admin.username, "password": PASSWORD})
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    from rosterdrop.audit.models import AuditEvent

    assert AuditEvent.objects.filter(kind="login_failed", login=admin.username).count() >= 5


def test_sign_in_works_and_cookies_are_locked_down(admin):
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": admin.username, "password": PASSWORD}, secure=True
    )
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"
