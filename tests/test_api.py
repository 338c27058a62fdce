"""The JSON API: bearer tokens, pagination, a district admin's token confined to their
district, approve and discard, the OpenAPI document."""

import io

import pytest
from django.core.management import call_command
from django.test import Client
from helpers import edit
from web_fixtures import held_sync

from rosterdrop.ingest.syncs import import_path

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("import_inline")]


def token_for(user) -> str:
    out = io.StringIO()
    call_command("token", "create", user.username, stdout=out)
    return out.getvalue().strip()


def api(user) -> Client:
    return Client(headers={"Authorization": f"Bearer {token_for(user)}"})


def test_openapi_document_is_served():
    doc = Client().get("/api/openapi.json").json()
    assert "/api/syncs/{sync_id}/approve" in doc["paths"]
    assert "BearerAuth" in str(doc["components"]["securitySchemes"]) or doc["components"]


def test_calls_need_a_valid_token(district, admin):
    assert Client().get("/api/districts").status_code == 401
    bad = Client(headers={"Authorization": "Bearer rd_not-a-token"})
    assert bad.get("/api/districts").status_code == 401
    admin.is_active = False
    token = token_for(admin)
    admin.save()
    revoked = Client(headers={"Authorization": f"Bearer {token}"})
    assert revoked.get("/api/districts").status_code == 401


def test_district_admin_token_sees_only_their_district(district, other, admin, school):
    theirs = import_path(other, school)
    mine = import_path(district, school)
    client = api(admin)
    listed = client.get("/api/districts").json()
    assert [d["slug"] for d in listed["items"]] == ["springfield"] and listed["count"] == 1
    assert client.get(f"/api/syncs/{mine.pk}").json()["district"] == "springfield"
    upload = theirs.uploads.first()
    for path in (
        f"/api/districts/{other.slug}",
        f"/api/districts/{other.slug}/syncs",
        f"/api/districts/{other.slug}/roster/users",
        f"/api/syncs/{theirs.pk}",
        f"/api/syncs/{theirs.pk}/issues",
        f"/api/uploads/{upload.pk}",
        f"/api/uploads/{upload.pk}/raw",
    ):
        assert client.get(path).status_code == 404, path


def test_roster_is_paginated_with_a_cap(district, operator, school):
    import_path(district, school)
    client = api(operator)
    first = client.get("/api/districts/springfield/roster/users?limit=10&offset=0").json()
    second = client.get("/api/districts/springfield/roster/users?limit=10&offset=10").json()
    assert len(first["items"]) == 10 and first["count"] > 10
    assert {r["sourced_id"] for r in first["items"]}.isdisjoint(
        r["sourced_id"] for r in second["items"]
    )
    too_many = client.get("/api/districts/springfield/roster/enrollments?limit=100000")
    assert too_many.status_code == 422  # over NINJA_PAGINATION_MAX_LIMIT
    one = first["items"][0]
    record = client.get(f"/api/districts/springfield/roster/users/{one['sourced_id']}").json()
    assert record["data"] == one["data"]


def test_record_times_are_those_of_the_syncs_that_wrote_it(district, operator, school):
    from datetime import datetime

    first = import_path(district, school)
    before = edit(school / "users.csv", 5, "givenName", "Later")
    second = import_path(district, school)
    record = api(operator).get(f"/api/districts/springfield/roster/users/{before[0]}").json()
    assert record["data"]["givenName"] == "Later"

    def ms(moment):  # the API writes milliseconds
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    assert datetime.fromisoformat(record["first_seen_at"]) == ms(first.finished_at)
    assert datetime.fromisoformat(record["changed_at"]) == ms(second.finished_at)
    assert second.finished_at > first.finished_at


def test_raw_upload_download_is_exact(district, operator, school):
    sync = import_path(district, school)
    upload = sync.uploads.get(filename="users.csv")
    response = api(operator).get(f"/api/uploads/{upload.pk}/raw")
    assert response["Content-Disposition"] == 'attachment; filename="users.csv"'
    assert b"".join(response.streaming_content) == (school / "users.csv").read_bytes()


def test_operator_approves_and_discards_held_syncs(district, operator, admin, school):
    sync = held_sync(district, school)
    assert api(admin).post(f"/api/syncs/{sync.pk}/approve").status_code == 403
    approved = api(operator).post(f"/api/syncs/{sync.pk}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "applied"
    assert api(operator).post(f"/api/syncs/{sync.pk}/discard").status_code == 409


def test_issues_filter(district, operator, school):
    from helpers import edit

    edit(school / "users.csv", 5, "role", "wizard")
    sync = import_path(district, school)
    issues = api(operator).get(f"/api/syncs/{sync.pk}/issues?code=enum_invalid").json()
    assert issues["count"] == 1 and issues["items"][0]["line"] == 5


@pytest.mark.parametrize(
    "query",
    [
        "offset=100000000000000000000",
        "offset=9223372036854775807",
        "offset=-1",
        "offset=abc",
        "limit=abc",
        "limit=-5",
        "limit=100000000000000000000",
    ],
)
def test_every_paginated_endpoint_refuses_bad_paging_with_422(district, operator, school, query):
    sync = import_path(district, school)
    client = api(operator)
    for path in (
        "/api/districts",
        "/api/districts/springfield/uploads",
        "/api/districts/springfield/syncs",
        f"/api/syncs/{sync.pk}/issues",
        f"/api/syncs/{sync.pk}/changes",
        "/api/districts/springfield/roster/users",
    ):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 422, (path, query, response.status_code)
        assert response.json()["detail"], (path, query)
        assert client.get(f"{path}?offset=1000000").json()["items"] == []
