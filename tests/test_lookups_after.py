"""A first import's reference indexes (roster.models.LOOKUPS) built after its sync on SQLite
(roster.store.lookups_built_after, ingest.index_builds): until then every reader gives the
answers it gives with them, the gaps included, and whatever builds them (the build after
the sync, or the district's next sync if that build never ran) leaves the same roster."""

import pytest
from helpers import edit, rows, write
from test_import import table_indexes

from rosterdrop.ingest import gaps, index_builds
from rosterdrop.ingest.models import RosterGaps
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster import store
from rosterdrop.roster.models import LOOKUP_INDEXES, records

PROBED = ("roles", "enrollments")


@pytest.fixture
def deferred(monkeypatch) -> None:
    """Every first import defers its reference indexes, however few its records."""
    monkeypatch.setattr(store, "DEFER_LOOKUPS_MIN", 1)


@pytest.fixture
def with_gaps(school):
    """The school with a student in no class and a class without a teacher."""
    users, enrollments = rows(school / "users.csv"), rows(school / "enrollments.csv")
    student = users[2][0]  # a student's row
    user, klass, role = (
        enrollments[0].index(c) for c in ("userSourcedId", "classSourcedId", "role")
    )
    untaught = enrollments[1][klass]
    kept = [
        row
        for row in enrollments[1:]
        if row[user] != student and not (row[klass] == untaught and row[role] == "teacher")
    ]
    write(school / "enrollments.csv", [enrollments[0], *kept])
    return school


def lookups(entity: str) -> set[str]:
    return {index.name for index in LOOKUP_INDEXES[entity]}


def answers(district) -> dict[str, object]:
    """What the readers that use the reference indexes answer: the gaps as the assistant
    gets them, each gap over the whole district, and lookups by reference."""
    kept = gaps.of(district)
    enrollments = records(district, "enrollments")
    some = list(enrollments.order_by("sourced_id").values_list("userSourcedId", "classSourcedId"))
    return {
        "kept": (kept.counts, kept.shown),
        "full": {kind: gaps.in_full(found) for kind, found in gaps.queries(district.pk).items()},
        "by user": [enrollments.filter(userSourcedId=u).count() for u, _ in some[::7]],
        "by class": [
            enrollments.filter(classSourcedId=c, role="student").count() for _, c in some[::7]
        ],
        "roles": [
            records(district, "roles").filter(userSourcedId=u, role="student").count()
            for u, _ in some[::7]
        ],
    }


def test_a_first_import_leaves_its_reference_indexes_to_after_its_sync(
    district, with_gaps, deferred
):
    from django.db import connection

    sync = import_path(district, with_gaps)
    assert sync.status == "applied"
    if connection.vendor == "postgresql":  # built in the sync's transaction there
        for entity in PROBED:
            assert lookups(entity) <= table_indexes(entity)
        return
    for entity in PROBED:
        assert not lookups(entity) & table_indexes(entity), entity
        assert not store.lookups_built(entity)
    assert not RosterGaps.objects.filter(district=district).exists()
    meanwhile = answers(district)  # gaps.of counts them now, without the indexes
    counts = meanwhile["kept"][0]  # type: ignore[index]
    assert counts["students_without_classes"] and counts["classes_without_teacher"]
    RosterGaps.objects.filter(district=district).delete()  # left for the build to count

    assert index_builds.build(district) == [sync.pk]
    for entity in PROBED:
        assert lookups(entity) <= table_indexes(entity), entity
    counted = RosterGaps.objects.get(district=district)
    assert (counted.sync_id, counted.token) == (sync.pk, store.roster_token(district.pk))
    assert answers(district) == meanwhile


def test_the_next_sync_builds_what_the_build_after_a_first_import_left_out(
    district, with_gaps, deferred
):
    """The build after the first import never ran (a crash, `rosterdrop import` with no
    worker): the next sync builds the indexes in its transaction and counts the gaps as a
    count with them does."""
    school = with_gaps
    assert import_path(district, school).status == "applied"
    edit(school / "enrollments.csv", 3, "role", "teacher")
    edit(school / "users.csv", 4, "givenName", "Renamed")
    sync = import_path(district, school)
    assert sync.status == "applied"
    for entity in PROBED:
        assert lookups(entity) <= table_indexes(entity), entity
    kept = RosterGaps.objects.get(district=district)
    assert kept.sync_id == sync.pk
    full = {kind: gaps.in_full(found) for kind, found in gaps.queries(district.pk).items()}
    assert kept.counts == {kind: n for kind, (n, _) in full.items()}
    assert kept.shown == {kind: ids for kind, (_, ids) in full.items()}
