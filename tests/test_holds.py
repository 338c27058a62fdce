"""Holds people can decide: what a held sync would remove, in words and with names; a
confirmation before it is applied; a district's admins decide their own holds only when the
district lets them (the web and the API alike)."""

import pytest
from django.test import Client
from helpers import rows, write
from web_fixtures import signed_in

from rosterdrop.accounts.models import ApiToken
from rosterdrop.ingest import hold_summary
from rosterdrop.ingest.syncs import import_path

pytestmark = pytest.mark.django_db

SCHOOL = "Mulberry Ashby Elementary School"


def held_without_young_students(district, school):
    """Import the school, then send it without its kindergarten and first-grade students."""
    import_path(district, school)
    users = rows(school / "users.csv")
    role, grades = users[0].index("role"), users[0].index("grades")
    gone = [r for r in users[1:] if r[role] == "student" and r[grades] in ("KG", "01", "1")]
    write(school / "users.csv", [r for r in users if r not in gone])
    ids = {r[0] for r in gone}
    for name, column in (("enrollments.csv", "userSourcedId"), ("demographics.csv", "sourcedId")):
        table = rows(school / name)
        write(school / name, [r for r in table if r[table[0].index(column)] not in ids])
    sync = import_path(district, school)
    assert sync.status == "held", sync.message
    return sync, gone


def test_a_hold_is_summed_up_students_first_with_grades_and_school(district, school):
    sync, gone = held_without_young_students(district, school)
    lines = [str(line) for line in hold_summary.of(sync)]
    assert lines[0] == f"{len(gone)} students, grades KG-1, {SCHOOL}"
    assert any(line.endswith(f"enrollments, {SCHOOL}") for line in lines[1:]), lines


def test_removed_records_show_names_beside_ids(district, school, operator):
    sync, gone = held_without_young_students(district, school)
    page = signed_in(operator).get(f"/d/springfield/syncs/{sync.pk}/?action=removed&entity=users")
    given, family = gone[0][8], gone[0][9]
    assert f"{given} {family} (student)" in page.text
    assert f"{len(gone)} students, grades KG-1, {SCHOOL}" in page.text


def test_approving_asks_for_confirmation_first(district, school, operator):
    sync, gone = held_without_young_students(district, school)
    web = signed_in(operator)
    confirm = web.get(f"/d/springfield/syncs/{sync.pk}/approve/")
    assert confirm.status_code == 200 and f"{len(gone)} students" in confirm.text
    sync.refresh_from_db()
    assert sync.status == "held"  # asking changed nothing


def test_admins_decide_their_own_holds_only_when_the_district_lets_them(
    district, school, admin, import_inline
):
    sync, _ = held_without_young_students(district, school)
    web = signed_in(admin)
    token = ApiToken.issue(admin)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert web.get(f"/d/springfield/syncs/{sync.pk}/approve/").status_code == 403
    assert web.post(f"/d/springfield/syncs/{sync.pk}/discard/").status_code == 403
    assert api.post(f"/api/syncs/{sync.pk}/discard").status_code == 403
    assert "An operator approves" in web.get(f"/d/springfield/syncs/{sync.pk}/").text
    district.admins_decide_holds = True
    district.save()
    assert "Approve and apply" in web.get(f"/d/springfield/syncs/{sync.pk}/").text
    assert web.post(f"/d/springfield/syncs/{sync.pk}/approve/").status_code == 302
    sync.refresh_from_db()
    assert sync.status == "applied" and sync.decided_by == "data@springfield.test"


def test_a_holds_message_gives_a_threshold_below_one_percent_as_set(district, school):
    district.removal_threshold = 0.005
    district.save()
    import_path(district, school)
    users = rows(school / "users.csv")
    write(school / "users.csv", users[:-1])
    sync = import_path(district, school)
    assert sync.status == "held", sync.message
    assert "more than the 0.5% allowed" in sync.message  # not "the 0% allowed"
