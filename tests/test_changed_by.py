"""What a sync changed, found from its change rows (ingest.models.changed_by) rather than from
the records' changed_sync_id, which no roster index holds: after any sequence of syncs that
add, change, remove, rename and bring back records, every dateLastModified filter and every
delta selects exactly the records whose changed_sync_id is one of its syncs; also on a roster
whose change rows were written before they named their records (ingest 0016)."""

import itertools
from pathlib import Path

import pytest
from conftest import SCHOOL_SMALL
from helpers import rows, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.districts.models import District
from rosterdrop.ingest.models import Change, Sync, changed_by, changed_ids
from rosterdrop.ingest.syncs import import_path
from rosterdrop.oneroster.objects import timestamp
from rosterdrop.oneroster.package import changed_since
from rosterdrop.oneroster.query import COMPARE, _syncs
from rosterdrop.oneroster.views import _sync_times
from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)

# The enrollments and users a sequence of syncs changes.
ENROLLMENTS = 5
USERS = 3
IDS = 3  # an enrollment is sent under one of these IDs (another: a rename) or left out
slugs = itertools.count()

# An enrollment: left out (None), or (the ID it is sent under, its end date's variant).
enrollment = st.one_of(st.none(), st.tuples(st.integers(0, IDS - 1), st.integers(0, 1)))
a_sync = st.fixed_dictionaries(
    {
        "enrollments": st.tuples(*[enrollment] * ENROLLMENTS),
        "users": st.tuples(*[st.integers(0, 2)] * USERS),  # a given name's variant
        "dry_run": st.booleans(),
    }
)


def files(folder: Path, sync: dict) -> Path:
    """The small school with its first enrollments and users as `sync` says."""
    if not folder.exists():
        folder.mkdir()
        for source in SCHOOL_SMALL.iterdir():
            (folder / source.name).write_bytes(source.read_bytes())
    enrollments = rows(SCHOOL_SMALL / "enrollments.csv")
    sent = []
    for row, how in zip(enrollments[1 : ENROLLMENTS + 1], sync["enrollments"], strict=True):
        if how is not None:
            i, end = how
            sent.append([f"{row[0]}-{i}" if i else row[0], *row[1:-1], f"2026-06-1{end}"])
    write(folder / "enrollments.csv", [enrollments[0], *sent, *enrollments[ENROLLMENTS + 1 :]])
    users = rows(SCHOOL_SMALL / "users.csv")
    name = users[0].index("givenName")
    for row, variant in zip(users[1 : USERS + 1], sync["users"], strict=True):
        row[name] = f"{row[name]}{'-' * variant}"
    write(folder / "users.csv", users)
    return folder


def assert_found_as_stamped(district: District) -> None:
    """Every filter of every entity a sync touched, and every delta, against the records'
    changed_sync_id."""
    times = _sync_times(district)
    stamps = sorted({timestamp(at) for at in times.values()} | {"2000-01-01T00:00:00.000Z"})
    chosen = [_syncs(op, stamp, times) for op in COMPARE for stamp in stamps]
    for since in Sync.objects.filter(district=district).exclude(finished_at=None):
        chosen.append(changed_since(district, since))
    for entity in ("enrollments", "users", "orgs"):
        table = records(district, entity)
        for syncs in chosen:
            found = set(table.filter(changed_by(district.pk, entity, syncs)).values_list("id"))
            stamped = set(table.filter(changed_sync_id__in=syncs).values_list("id"))
            assert found == stamped, (entity, syncs)
            ids = changed_ids(district.pk, entity, syncs, most=10**6)
            assert ids is None or ids == sorted(i for (i,) in stamped), (entity, syncs)
            if syncs == _syncs(">", stamps[0], times):  # every sync: read from change rows
                assert ids is not None


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(syncs=st.lists(a_sync, min_size=1, max_size=5))
def test_filters_and_deltas_select_the_records_their_syncs_changed_last(tmp_path, syncs):
    slug = f"changed-{next(slugs)}"
    district = District.objects.create(slug=slug, name=slug, format="oneroster-1.1")
    assert import_path(district, SCHOOL_SMALL).status == "applied"
    for sync in syncs:
        done = import_path(district, files(tmp_path / slug, sync), dry_run=sync["dry_run"])
        assert done.status in ("applied", "no_changes"), done.message
    assert_found_as_stamped(district)


def test_change_rows_of_an_upgraded_roster_name_their_records(tmp_path, district):
    """Change rows written before 0016 named no record: the migration finds them by source
    ID, and the filters and deltas select what they did before. A row of a record that a
    later sync renamed may then name the record under its ID now, which that later sync
    changed: changed_by counts it for that sync only."""
    from test_migrations import migrate

    steps = [
        {"enrollments": ((1, 0), None, (0, 1), (2, 0), (0, 0)), "users": (1, 0, 2)},
        {"enrollments": ((2, 0), (0, 0), (0, 1), (1, 1), None), "users": (1, 1, 2)},
        {"enrollments": ((0, 0), (0, 1), (1, 1), (1, 1), (1, 0)), "users": (0, 1, 0)},
    ]
    assert import_path(district, SCHOOL_SMALL).status == "applied"
    for step in steps:
        assert import_path(district, files(tmp_path / "school", step)).status == "applied"
    last = Change.objects.filter(sync=Sync.objects.latest("finished_at"))
    named = set(last.values_list("pk", "record_id", "left_record_id"))
    assert any(left for _, _, left in named)  # a rename
    migrate([("ingest", "0015_rostergaps_token")])
    migrate()
    assert set(last.values_list("pk", "record_id", "left_record_id")) == named
    assert_found_as_stamped(district)
