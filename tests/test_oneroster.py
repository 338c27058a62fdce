"""The OneRoster 1.2 Rostering REST service: every path of the official OpenAPI document
answered as the document says (schemathesis), OAuth 2.0 client credentials and scopes, and the
query parameters (filter, sort, fields, paging)."""

import base64
import io
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import schemathesis
from conftest import SAMPLES, SCHOOL_SMALL
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from helpers import rows, write
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.syncs import import_path
from rosterdrop.oneroster import endpoints
from rosterdrop.oneroster.models import AccessToken
from rosterdrop.roster.models import MODELS

pytestmark = pytest.mark.django_db(transaction=True)

BASE = "/oneroster/springfield/ims/oneroster/rostering/v1p2"
SCHOOL = "31dfb99b-6c85-47ac-a549-524e786d8327"
CLASS = "ecdd59f8-6e45-4eed-a08a-9f5484c67180"
TERM = "5be249b7-55e1-4a26-9f19-e79f9380cb66"
STUDENT = "f0e33289-c386-444c-ac0d-58c34bcaf645"


def add_client(slug: str = "springfield", *scopes: str) -> tuple[str, str]:
    out = io.StringIO()
    args = [a for s in scopes for a in ("--scope", s)]
    call_command("oneroster-client", "add", "Reading app", "--district", slug, *args, stdout=out)
    found = dict(re.findall(r"^(client_id|client_secret)\s+(\S+)$", out.getvalue(), re.M))
    return found["client_id"], found["client_secret"]


def token(client_id: str, secret: str, **extra) -> str:
    answer = Client().post(
        "/oneroster/token",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        | extra,
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["token_type"] == "bearer" and answer["Cache-Control"] == "no-store"
    return answer.json()["access_token"]


def reader(*scopes: str, slug: str = "springfield") -> Client:
    return Client(headers={"Authorization": f"Bearer {token(*add_client(slug, *scopes))}"})


def minor(answer) -> str:
    return answer.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]


def test_every_path_of_the_official_document_is_served():
    assert sorted(endpoints.BY_PATH) == sorted(endpoints.document()["paths"])
    assert len(endpoints.BY_PATH) == 41


def real_ids(district) -> dict[str, str]:
    """IDs of records that exist, for every path parameter ("none" where the roster has no
    such record): a class of a school with a student, its school, course and a term."""
    active = {e: MODELS[e].objects.filter(district=district, status="active") for e in MODELS}
    schools = active["orgs"].filter(type="school").values("sourced_id")
    classes = active["classes"].filter(schoolSourcedId__in=schools).values("sourced_id")
    student = active["enrollments"].filter(role="student", classSourcedId__in=classes).first()
    one = active["classes"].get(sourced_id=student.classSourcedId)
    terms = active["academicSessions"].filter(type="term").values_list("sourced_id", flat=True)
    teacher = active["enrollments"].filter(role="teacher").values_list("userSourcedId", flat=True)
    return {
        "classSourcedId": one.sourced_id,
        "schoolSourcedId": one.schoolSourcedId,
        "courseSourcedId": one.courseSourcedId or "none",
        "termSourcedId": next(iter(terms), "none"),
        "studentSourcedId": student.userSourcedId,
        "userSourcedId": student.userSourcedId,
        "teacherSourcedId": next(iter(teacher), "none"),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt, sample",
    [
        ("oneroster-1.1", SCHOOL_SMALL),
        ("sds-v2.1", SAMPLES / "sds-microsoft" / "v2.1"),
        ("clever", Path(__file__).parent / "fixtures" / "clever"),
        ("sds-v1", SAMPLES / "sds-microsoft" / "v1-us" / "25 Users"),
        ("alo", Path(__file__).parent / "fixtures" / "alo"),
        ("parentsquare", Path(__file__).parent / "fixtures" / "parentsquare"),
    ],
)
def test_every_answer_is_valid_against_the_official_document(district, settings, fmt, sample):
    """Schemathesis generates requests from the document (localized as the discovery document)
    and checks each answer: no server error, status, headers and body as documented. Explicit
    requests with real IDs read every path's records, whatever format the district sent."""
    settings.ONEROSTER_RATE_LIMIT = 0
    district.format = fmt
    district.save()
    assert import_path(district, sample).status in ("applied", "applied_with_errors")
    app = WSGIHandler()
    schema = schemathesis.openapi.from_wsgi(
        f"{BASE}/discovery/onerosterv1p2rostersservice_openapi3_v1p0.json", app
    )
    auth = {"Authorization": f"Bearer {token(*add_client())}"}
    real = real_ids(district)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 41
    read = 0
    for operation in operations:
        ids = {n: real.get(n, "") for n in re.findall(r"\{(\w+)\}", operation.path)}
        if operation.path.endswith("/{sourcedId}"):
            # A real record of the path's own kind: the first of its collection.
            collection = operation.path.removesuffix("/{sourcedId}")
            first = next(iter(Client(headers=auth).get(f"{BASE}{collection}").json().values()))
            ids["sourcedId"] = first[0]["sourcedId"] if first else "none"
        for query in ({}, {"limit": 2, "offset": 1, "sort": "sourcedId", "orderBy": "desc"}):
            case = operation.Case(path_parameters=ids, query=query)
            answer = case.call_and_validate(headers=auth)
            expected = 404 if "none" in ids.values() else 200
            assert answer.status_code == expected, (operation.path, ids, answer.text)
            read += answer.status_code == 200 and query == {}

        @hypothesis_settings(
            max_examples=4,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def generated(case):
            # Strings the document types as mere strings (filter, sort, fields) can be
            # invalid: the document answers them 400, which that one check does not know.
            case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

        generated()
    assert read >= 30  # what a sample has not (grading periods, terms, courses) answers 404


def test_token_endpoint_and_revocation(served):
    client_id, secret = add_client()
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    answer = Client(headers={"Authorization": f"Basic {basic}"}).post(
        "/oneroster/token", {"grant_type": "client_credentials"}
    )
    assert answer.status_code == 200 and answer.json()["expires_in"] == 3600
    bearer = answer.json()["access_token"]
    app = Client(headers={"Authorization": f"Bearer {bearer}"})
    assert app.get(f"{BASE}/orgs").status_code == 200
    wrong = Client().post(
        "/oneroster/token",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "guess"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = Client().post("/oneroster/token", {"grant_type": "password"})
    assert grant.json()["error"] == "unsupported_grant_type"
    # Expired tokens stop working.
    AccessToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = app.get(f"{BASE}/orgs")
    assert expired.status_code == 401 and minor(expired) == "unauthorisedrequest"
    assert expired["WWW-Authenticate"].startswith("Bearer")
    # A revoked client's tokens stop working and it gets no new one.
    fresh = Client(headers={"Authorization": f"Bearer {token(client_id, secret)}"})
    assert fresh.get(f"{BASE}/orgs").status_code == 200
    call_command("oneroster-client", "revoke", client_id, stdout=io.StringIO())
    assert fresh.get(f"{BASE}/orgs").status_code == 401
    again = Client().post(
        "/oneroster/token",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert again.status_code == 401
    assert Client().get(f"{BASE}/orgs").status_code == 401


def test_a_client_revokes_its_own_token(served):
    client_id, secret = add_client()
    bearer = token(client_id, secret)
    app = Client(headers={"Authorization": f"Bearer {bearer}"})
    assert app.get(f"{BASE}/orgs").status_code == 200
    Client().post(
        "/oneroster/revoke", {"token": bearer, "client_id": client_id, "client_secret": secret}
    )
    assert app.get(f"{BASE}/orgs").status_code == 401


def test_scopes_are_enforced_per_path(served):
    core = reader("roster-core.readonly")
    assert core.get(f"{BASE}/users").status_code == 200
    denied = core.get(f"{BASE}/demographics")
    assert denied.status_code == 403 and minor(denied) == "forbidden"
    assert core.get(f"{BASE}/demographics/{STUDENT}").status_code == 403
    # Nested paths are outside roster-core.
    assert core.get(f"{BASE}/classes/{CLASS}/students").status_code == 403
    full = reader("roster.readonly")
    assert full.get(f"{BASE}/classes/{CLASS}/students").status_code == 200
    assert full.get(f"{BASE}/demographics").status_code == 403
    demo = reader("roster-demographics.readonly")
    assert demo.get(f"{BASE}/demographics").status_code == 200
    assert demo.get(f"{BASE}/users").status_code == 403
    # A client asks for no scope it was not given.
    client_id, secret = add_client("springfield", "roster-core.readonly")
    wider = Client().post(
        "/oneroster/token",
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "https://purl.imsglobal.org/spec/or/v1p2/scope/roster.readonly",
        },
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_a_token_reads_only_its_own_district(served, other):
    import_path(other, SCHOOL_SMALL)
    app = reader()
    answer = app.get(f"/oneroster/{other.slug}/ims/oneroster/rostering/v1p2/users")
    assert answer.status_code == 403 and minor(answer) == "forbidden"


@pytest.fixture
def other(db):
    from rosterdrop.districts.models import District

    return District.objects.create(slug="shelbyville", name="Shelbyville", format="oneroster-1.1")


def test_envelopes_refs_and_required_fields(served):
    app = reader()
    schools = app.get(f"{BASE}/schools").json()
    assert list(schools) == ["orgs"] and schools["orgs"][0]["sourcedId"] == SCHOOL
    students = app.get(f"{BASE}/students?limit=500").json()["users"]
    assert len(students) == 72 and all(
        any(r["role"] == "student" for r in s["roles"]) for s in students
    )
    one = app.get(f"{BASE}/classes/{CLASS}").json()["class"]
    assert one["school"] == {
        "href": f"http://testserver{BASE}/orgs/{SCHOOL}",
        "sourcedId": SCHOOL,
        "type": "org",
    }
    assert one["terms"][0]["type"] == "academicSession" and one["course"]["type"] == "course"
    # The 1.1 role 'administrator' has no 1.2 user role of that name: an extension.
    admin = app.get(f"{BASE}/users/ad249d65-f88e-4f46-802c-943a5b0f6fba").json()["user"]
    assert admin["roles"][0]["role"] == "ext:administrator"
    assert app.get(f"{BASE}/students/ad249d65-f88e-4f46-802c-943a5b0f6fba").status_code == 404
    missing = app.get(f"{BASE}/classes/no-such-class/students")
    assert missing.status_code == 404 and minor(missing) == "unknownobject"
    # An ID with a line break in it is still the service's JSON 404, not the console's page.
    broken = app.get(f"{BASE}/classes/a%0Ab/students")
    assert broken.status_code == 404 and minor(broken) == "unknownobject"
    enrolled = app.get(f"{BASE}/classes/{CLASS}/students").json()["users"]
    assert (
        len(enrolled)
        == MODELS["enrollments"].objects.filter(classSourcedId=CLASS, role="student").count()
        > 0
    )


def test_paging_headers_and_edges(served):
    app = reader()
    first = app.get(f"{BASE}/enrollments?limit=200")
    assert first["X-Total-Count"] == "546" and len(first.json()["enrollments"]) == 200
    assert 'offset=200>; rel="next"' in first["Link"] and 'offset=400>; rel="last"' in first["Link"]
    assert 'rel="prev"' not in first["Link"]
    last = app.get(f"{BASE}/enrollments?limit=200&offset=400")
    assert len(last.json()["enrollments"]) == 146 and 'rel="next"' not in last["Link"]
    beyond = app.get(f"{BASE}/enrollments?offset=10000")
    assert beyond.status_code == 200 and beyond.json() == {"enrollments": []}
    everything = app.get(f"{BASE}/enrollments?limit=10000").json()["enrollments"]
    assert len({e["sourcedId"] for e in everything}) == 546
    default = app.get(f"{BASE}/enrollments").json()["enrollments"]
    assert len(default) == 100
    for bad in ("limit=0", "limit=x", "offset=-1", "offset=100000000000000000000"):
        answer = app.get(f"{BASE}/enrollments?{bad}")
        assert answer.status_code == 400 and minor(answer) == "invaliddata", bad
    # Pages in a sort order never overlap and cover everything.
    seen = []
    for offset in range(0, 546, 100):
        page = app.get(f"{BASE}/enrollments?sort=role&limit=100&offset={offset}").json()
        seen += [e["sourcedId"] for e in page["enrollments"]]
    assert len(seen) == len(set(seen)) == 546


def test_sort_and_order(served):
    app = reader()
    names = [
        u["familyName"] for u in app.get(f"{BASE}/users?sort=familyName&limit=500").json()["users"]
    ]
    assert names == sorted(names)
    down = app.get(f"{BASE}/users?sort=familyName&orderBy=desc&limit=500").json()["users"]
    assert [u["familyName"] for u in down] == sorted(names, reverse=True)
    bad = app.get(f"{BASE}/users?sort=shoeSize")
    assert bad.status_code == 400 and minor(bad) == "invalid_selection_field"


def test_fields_selects_what_is_written(served):
    app = reader()
    both = app.get(f"{BASE}/users?fields=givenName,familyName&limit=3").json()["users"]
    assert all(set(u) == {"givenName", "familyName"} for u in both)
    repeated = app.get(f"{BASE}/users?fields=sourcedId&fields=roles&limit=3").json()["users"]
    assert all(set(u) == {"sourcedId", "roles"} for u in repeated)
    single = app.get(f"{BASE}/users/{STUDENT}?fields=email").json()
    assert list(single["user"]) == ["email"]
    bad = app.get(f"{BASE}/users?fields=givenName,shoeSize")
    assert bad.status_code == 400 and minor(bad) == "invalid_selection_field"


def test_filter_grammar(served):
    app = reader()

    def found(expression: str) -> list[dict]:
        answer = app.get(f"{BASE}/users", {"filter": expression, "limit": 1000})
        assert answer.status_code == 200, (expression, answer.content)
        return answer.json()["users"]

    assert [u["sourcedId"] for u in found(f"sourcedId='{STUDENT}'")] == [STUDENT]
    assert len(found(f"sourcedId!='{STUDENT}'")) == 78
    given = found("givenName='Thandiwe'")[0]["givenName"]
    assert given == "Thandiwe"
    assert all("mossbottom" in u["username"] for u in found("username~'MOSSBOTTOM'"))
    both = found("givenName='Thandiwe' AND familyName='Tumbleweed'")
    assert [u["sourcedId"] for u in both] == [STUDENT]
    either = found("givenName='Thandiwe' OR givenName='Malik'")
    assert {u["givenName"] for u in either} == {"Thandiwe", "Malik"}
    ranged = found("familyName>='T' AND familyName<'U'")
    assert ranged and all(u["familyName"].startswith("T") for u in ranged)
    assert found("familyName='O''Brien'") == []  # a quoted quote is a quote
    assert found("primaryOrg.sourcedId='nothing'") == []
    enrollments = app.get(f"{BASE}/enrollments", {"filter": f"class.sourcedId='{CLASS}'"})
    assert {e["class"]["sourcedId"] for e in enrollments.json()["enrollments"]} == {CLASS}
    for bad, code in (
        ("shoeSize='9'", "invalid_filter_field"),
        ("givenName=Thandiwe", "invalid_filter_field"),
        ("givenName='a' AND familyName='b' OR email='c'", "invalid_filter_field"),
        ("givenName='a' XOR familyName='b'", "invalid_filter_field"),
    ):
        answer = app.get(f"{BASE}/users", {"filter": bad})
        assert answer.status_code == 400 and minor(answer) == code, bad
    # SQL in a value is a value.
    assert found("givenName='x'' OR ''1''=''1'") == []


def test_pages_are_the_same_whichever_way_their_rows_are_found(served, monkeypatch):
    """Few matches are sorted by row ID after reading them from an index; many are walked in
    row order by the database (views._page_ids): the same pages either way."""
    app = reader()
    queries = [
        "limit=100&offset=0", "limit=100&offset=500", "limit=7&offset=100&orderBy=desc",
        "limit=50&filter=role='student'", "limit=50&offset=50&filter=dateLastModified>'2000-01-01'",
    ]  # fmt: skip
    read = {q: app.get(f"{BASE}/enrollments?{q}").json()["enrollments"] for q in queries}
    monkeypatch.setattr("rosterdrop.oneroster.views.FEW", 0)
    for q in queries:
        assert app.get(f"{BASE}/enrollments?{q}").json()["enrollments"] == read[q], q
    assert all(read.values()) and len(read["limit=7&offset=100&orderBy=desc"]) == 7


def test_the_total_count_follows_the_roster(served, school):
    """Counts are kept per state of the roster: a sync that adds a user changes the next."""
    app = reader()
    before = int(app.get(f"{BASE}/users?limit=1")["X-Total-Count"])
    users = rows(school / "users.csv")
    extra = list(users[-1])
    extra[0], extra[6] = "one-more-user", "one.more"
    write(school / "users.csv", [*users, extra])
    assert import_path(served, school).status == "applied"
    assert int(app.get(f"{BASE}/users?limit=1")["X-Total-Count"]) == before + 1


def test_delta_polling_sees_changes_and_removals(served, school):
    app = reader()
    everyone = app.get(f"{BASE}/users", {"filter": "dateLastModified>'2000-01-01'", "limit": 500})
    assert everyone.json()["users"] and len(everyone.json()["users"]) == 79
    first = Sync.objects.get()
    stamp = everyone.json()["users"][0]["dateLastModified"]
    none = app.get(f"{BASE}/users", {"filter": f"dateLastModified>'{stamp}'"}).json()
    assert none == {"users": []}
    # Remove one student and rename another; sync; a delta poll sees exactly these two.
    users = (school / "users.csv").read_text().splitlines()
    kept = [line for line in users if not line.startswith(STUDENT)]
    renamed = kept[2].replace(",true,", ",false,", 1)
    (school / "users.csv").write_text("\n".join([*kept[:2], renamed, *kept[3:]]) + "\n")
    enrollments = (school / "enrollments.csv").read_text().splitlines()
    (school / "enrollments.csv").write_text(
        "\n".join(line for line in enrollments if STUDENT not in line) + "\n"
    )
    demographics = (school / "demographics.csv").read_text().splitlines()
    (school / "demographics.csv").write_text(
        "\n".join(line for line in demographics if not line.startswith(STUDENT)) + "\n"
    )
    second = import_path(served, school)
    assert second.status == "applied" and second.pk != first.pk
    delta = app.get(f"{BASE}/users", {"filter": f"dateLastModified>'{stamp}'"}).json()["users"]
    by_id = {u["sourcedId"]: u for u in delta}
    assert by_id[STUDENT]["status"] == "tobedeleted"
    assert by_id[STUDENT]["dateLastModified"] > stamp
    changed = renamed.split(",")[0]
    assert by_id[changed]["status"] == "active" and by_id[changed]["enabledUser"] == "false"
    assert len(by_id) == 2
    gone = app.get(f"{BASE}/users/{STUDENT}").json()["user"]
    assert gone["status"] == "tobedeleted"
    bad = app.get(f"{BASE}/users", {"filter": "dateLastModified>'yesterday'"})
    assert bad.status_code == 422 and minor(bad) == "invaliddata"


def test_too_many_requests_answer_429(served, settings):
    settings.ONEROSTER_RATE_LIMIT = 3
    app = reader()
    answers = [app.get(f"{BASE}/orgs").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]


def test_discovery_document_is_served_at_both_names(served):
    for name in (
        "onerosterv1p2rostersservice_openapi3_v1p0.json",
        "imsorv1p2_rostering_openapi3_v1p0.json",
    ):
        doc = Client().get(f"{BASE}/discovery/{name}").json()
        assert doc["servers"][0]["url"] == f"http://testserver{BASE}"
        flow = doc["components"]["securitySchemes"]["OAuth2CC"]["flows"]["clientCredentials"]
        assert flow["tokenUrl"] == "http://testserver/oneroster/token"
        assert len(doc["paths"]) == 41


def test_hrefs_lead_to_their_records_whatever_their_ids_hold(district):
    """Clever's IDs are joined from several columns: an href quotes them, and reading it
    finds the record (no second decoding of a % in an ID)."""
    district.format = "clever"
    district.save()
    assert import_path(district, Path(__file__).parent / "fixtures" / "clever").status in (
        "applied",
        "applied_with_errors",
    )
    app = reader()
    enrollments = app.get(f"{BASE}/enrollments?limit=1000").json()["enrollments"]
    odd = [e for e in enrollments if re.search(r"[^\w.\-]", e["sourcedId"])]
    assert odd, "the fixture has IDs with reserved characters"
    for enrollment in odd[:5] + enrollments[:5]:
        for ref in ("user", "class", "school"):
            href = enrollment[ref]["href"].removeprefix("http://testserver")
            answer = app.get(href)
            assert answer.status_code == 200, href
            assert next(iter(answer.json().values()))["sourcedId"] == enrollment[ref]["sourcedId"]
        own = app.get(f"{BASE}/enrollments/{quote(enrollment['sourcedId'], safe='')}")
        assert own.json()["enrollment"]["sourcedId"] == enrollment["sourcedId"]


def test_the_console_reading_page(served):
    """Operators create and revoke clients and webhooks in the console (the secret shown
    once); a district's admin sees the page and downloads the export, and creates nothing."""
    import web_fixtures

    operator = web_fixtures.signed_in(web_fixtures.make_user("ops@vendor.test", operator=True))
    page = f"/d/{served.slug}/reading/"
    assert "Reading the roster" in operator.get(page).content.decode()
    made = operator.post(f"{page}clients/", {"name": "Reader", "scope": ["roster.readonly"]})
    text = made.content.decode()
    client_id = re.search(r"client_id <code class=\"copy\">(\w+)</code>", text)[1]
    secret = re.search(r"client_secret <code class=\"copy\">([\w-]+)</code>", text)[1]
    app = Client(headers={"Authorization": f"Bearer {token(client_id, secret)}"})
    assert app.get(f"{BASE}/classes/{CLASS}/students").status_code == 200
    assert secret not in operator.get(page).content.decode()  # shown once
    from rosterdrop.oneroster.models import Client as OAuthClient

    pk = OAuthClient.objects.get(client_id=client_id).pk
    operator.post(f"{page}clients/{pk}/revoke/")
    assert app.get(f"{BASE}/orgs").status_code == 401
    hooked = operator.post(
        f"{page}webhooks/", {"url": "https://vendor.example/h", "entity": ["users"]}
    )
    assert "whsec_" in hooked.content.decode()
    admin = web_fixtures.signed_in(web_fixtures.make_user("data@springfield.test", served))
    seen = admin.get(page).content.decode()
    assert (
        client_id in seen and "https://vendor.example/h" in seen and "Create a client" not in seen
    )
    assert admin.post(f"{page}clients/", {"name": "x"}).status_code == 403
    download = admin.get(f"{page}export.zip")
    assert download["Content-Type"] == "application/zip"
    assert b"manifest.csv" in b"".join(download.streaming_content)


def test_classes_of_formats_without_courses_or_terms_get_made_up_ones(district):
    """ALO names no course or term for a class: the REST class refers to a made-up course
    and school year (as the CSV export writes them), and their hrefs answer."""
    district.format = "alo"
    district.save()
    assert import_path(district, Path(__file__).parent / "fixtures" / "alo").status in (
        "applied",
        "applied_with_errors",
    )
    app = reader()
    one = app.get(f"{BASE}/classes?limit=1").json()["classes"][0]
    assert one["course"]["sourcedId"] == f"rosterdrop-course-{one['sourcedId']}"
    course = app.get(one["course"]["href"].removeprefix("http://testserver")).json()["course"]
    assert course["sourcedId"] == one["course"]["sourcedId"] and course["title"] == one["title"]
    term = app.get(one["terms"][0]["href"].removeprefix("http://testserver")).json()
    assert term["academicSession"]["type"] == "schoolYear"
    assert app.get(f"{BASE}/courses/rosterdrop-course-nothing").status_code == 404
