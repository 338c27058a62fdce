"""A renamed record (an enrollment sent under a new sourcedId, the same class, person and role)
as the OneRoster REST service serves it: its old ID as a removed record's, tobedeleted as of the
renaming sync, in every collection that served it, counted, sorted, paged, filtered and
field-selected like any record; so a poller that applies each `dateLastModified>` page ends
with exactly the roster's active records."""

import itertools
from pathlib import Path

import pytest
from conftest import SCHOOL_SMALL
from helpers import delta, rows, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_oneroster import BASE, CLASS, SCHOOL, reader

from rosterdrop.districts.models import District
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster.models import records

pytestmark = pytest.mark.django_db(transaction=True)

# Every collection that serves the class's enrollments.
PATHS = (
    "/enrollments",
    f"/schools/{SCHOOL}/enrollments",
    f"/schools/{SCHOOL}/classes/{CLASS}/enrollments",
)


def read_all(app, base: str, path: str, limit: int = 2, **query) -> list[dict]:
    """Every page of a collection, by the Link header's next page; X-Total-Count checked
    against what the pages held."""
    url, params, found = f"{base}{path}", {"limit": limit, **query}, []
    while True:
        answer = app.get(url, params)
        assert answer.status_code == 200, answer.content
        found += next(iter(answer.json().values()))
        links = dict((rel, link) for link, rel in _links(answer["Link"]))
        if "next" not in links:
            assert int(answer["X-Total-Count"]) == len(found)
            return found
        url, params = links["next"], {}


def _links(header: str) -> list[tuple[str, str]]:
    parts = (p.split(";") for p in header.split(", "))
    return [(link.strip()[1:-1], rel.strip()[5:-1]) for link, rel in parts]


def total(app, path: str, **query) -> int:
    return int(app.get(f"{BASE}{path}", {"limit": 1, **query})["X-Total-Count"])


def test_a_renamed_id_is_served_as_a_removed_one_in_every_collection(served, school):
    app = reader()
    table = rows(school / "enrollments.csv")
    renamed, removed = table[1], table[2]  # both of the class CLASS at SCHOOL
    old = renamed[0]
    before = {path: total(app, path) for path in PATHS}
    as_was = app.get(f"{BASE}/enrollments/{old}").json()["enrollment"]
    stamp = as_was["dateLastModified"]
    renamed[0] = "renamed-enrollment"
    write(school / "enrollments.csv", [r for r in table if r is not removed])
    sync = import_path(served, school)
    assert sync.status == "applied", sync.message
    assert sync.changes["enrollments"]["updated"] == 1  # renamed, not removed and added
    assert sync.changes["enrollments"]["removed"] == 1
    since = f"dateLastModified>'{stamp}'"
    for path in PATHS:
        changed = read_all(app, BASE, path, filter=since, sort="sourcedId")
        assert [e["sourcedId"] for e in changed] == sorted([old, removed[0], renamed[0]])
        by_id = {e["sourcedId"]: e for e in changed}
        assert by_id[old]["status"] == by_id[removed[0]]["status"] == "tobedeleted"
        assert by_id[renamed[0]]["status"] == "active"
        assert len({e["dateLastModified"] for e in changed}) == 1
        assert by_id[old]["dateLastModified"] > stamp
        # The old ID counts like any record, and is filtered and field-selected like one.
        assert total(app, path) == before[path] + 1
        gone = read_all(app, BASE, path, filter="status='tobedeleted'")
        assert {e["sourcedId"] for e in gone} == {old, removed[0]}
        now = read_all(app, BASE, path, filter=f"{since} AND status='active'")
        assert [e["sourcedId"] for e in now] == [renamed[0]]
        picked = app.get(
            f"{BASE}{path}", {"filter": f"sourcedId='{old}'", "fields": "sourcedId,status"}
        )
        assert picked.json() == {"enrollments": [{"sourcedId": old, "status": "tobedeleted"}]}
        descending = read_all(app, BASE, path, filter=since, sort="sourcedId", orderBy="desc")
        assert descending == changed[::-1]
    # Read by its ID, the old one answers as the removed one does: the record as it was.
    one = app.get(f"{BASE}/enrollments/{old}").json()["enrollment"]
    other = app.get(f"{BASE}/enrollments/{removed[0]}").json()["enrollment"]
    assert one == as_was | {"status": "tobedeleted", "dateLastModified": other["dateLastModified"]}
    assert other["status"] == "tobedeleted"
    # The person is still enrolled in the class.
    people = read_all(app, BASE, f"/classes/{CLASS}/{renamed[6]}s", filter="status='active'")
    assert renamed[5] in {p["sourcedId"] for p in people}


def test_an_id_renamed_back_comes_back_as_a_removed_one_does(served, school):
    app = reader()
    table = rows(school / "enrollments.csv")
    old = table[1][0]
    count = total(app, "/enrollments")
    table[1][0] = "renamed-enrollment"
    write(school / "enrollments.csv", table)
    assert import_path(served, school).status == "applied"
    stamp = app.get(f"{BASE}/enrollments/{old}").json()["enrollment"]["dateLastModified"]
    table[1][0] = old
    write(school / "enrollments.csv", table)
    back = import_path(served, school)
    assert back.status == "applied", back.message
    changed = read_all(app, BASE, "/enrollments", filter=f"dateLastModified>'{stamp}'")
    assert {e["sourcedId"]: e["status"] for e in changed} == {
        old: "active",
        "renamed-enrollment": "tobedeleted",
    }
    assert total(app, "/enrollments") == count + 1
    assert total(app, "/enrollments", filter="status='active'") == count


def test_a_rename_in_a_delta_leaves_the_old_id_tobedeleted(served, tmp_path):
    app = reader()
    table = rows(SCHOOL_SMALL / "enrollments.csv")
    old = list(table[1])
    stamp = app.get(f"{BASE}/enrollments/{old[0]}").json()["enrollment"]["dateLastModified"]
    gone, new = list(old), list(old)
    gone[1], new[0] = "tobedeleted", "renamed-enrollment"
    sent = delta(tmp_path / "delta", "1.1", {"enrollments": [table[0], gone, new]})
    sync = import_path(served, sent)
    assert sync.status == "applied", sync.message
    assert sync.changes["enrollments"]["updated"] == 1
    for path in PATHS:
        changed = read_all(app, BASE, path, filter=f"dateLastModified>'{stamp}'")
        assert {e["sourcedId"]: e["status"] for e in changed} == {
            old[0]: "tobedeleted",
            "renamed-enrollment": "active",
        }


# The enrollments a sequence of syncs changes: each is absent, or sent under one of a few IDs.
CHANGED = 5
IDS = 3
slugs = itertools.count()


@pytest.mark.slow
@settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    syncs=st.lists(
        st.tuples(st.booleans(), st.tuples(*[st.sampled_from([None, *range(IDS)])] * CHANGED)),
        min_size=1,
        max_size=4,
    )
)
def test_a_poller_of_changes_ends_with_exactly_the_roster(tmp_path, syncs):
    """Syncs, full files or deltas, that remove, add back and rename a few enrollments; after
    each, a poller that applies the `dateLastModified>` pages to its copy holds exactly the
    roster's active IDs, which are those sent."""
    slug = f"poller-{next(slugs)}"
    district = District.objects.create(slug=slug, name=slug, format="oneroster-1.1")
    folder = tmp_path / slug
    table = rows(SCHOOL_SMALL / "enrollments.csv")
    base = f"/oneroster/{slug}/ims/oneroster/rostering/v1p2"
    state = (0,) * CHANGED
    assert import_path(district, full_files(folder, table, state)).status == "applied"
    app = reader(slug=slug)
    everything = read_all(app, base, "/enrollments", limit=1000)
    copy = {e["sourcedId"] for e in everything if e["status"] == "active"}
    stamp = max(e["dateLastModified"] for e in everything)
    for n, (as_delta, sent) in enumerate(syncs):
        if as_delta:
            changes = delta_rows(table, state, sent)
            files = delta(tmp_path / f"{slug}-{n}", "1.1", {"enrollments": [table[0], *changes]})
        else:
            files = full_files(folder, table, sent)
        state = sent
        if as_delta and not changes:
            continue
        sync = import_path(district, files)
        assert sync.status in ("applied", "no_changes"), sync.message
        changed = read_all(app, base, "/enrollments", filter=f"dateLastModified>'{stamp}'")
        for record in changed:
            if record["status"] == "active":
                copy.add(record["sourcedId"])
            else:
                copy.discard(record["sourcedId"])
        stamp = max([stamp, *(e["dateLastModified"] for e in changed)])
        active = records(district, "enrollments").filter(status="active")
        assert copy == set(active.values_list("sourced_id", flat=True))
        assert copy == {r[0] for r in sent_rows(table, state)} | {
            r[0] for r in table[CHANGED + 1 :]
        }


def as_sent(row: list[str], i: int) -> list[str]:
    """One of the first CHANGED enrollments under its own ID (0) or another of its own."""
    return [f"{row[0]}-{i}" if i else row[0], *row[1:]]


def sent_rows(table: list[list[str]], sent: tuple) -> list[list[str]]:
    """The first CHANGED enrollments as `sent` says: left out (None), or under an ID."""
    return [
        as_sent(r, i) for r, i in zip(table[1 : CHANGED + 1], sent, strict=True) if i is not None
    ]


def full_files(folder: Path, table: list[list[str]], sent: tuple) -> Path:
    """The small school with its first CHANGED enrollments as `sent` says."""
    if not folder.exists():
        folder.mkdir()
        for source in SCHOOL_SMALL.iterdir():
            (folder / source.name).write_bytes(source.read_bytes())
    write(folder / "enrollments.csv", [table[0], *sent_rows(table, sent), *table[CHANGED + 1 :]])
    return folder


def delta_rows(table: list[list[str]], was: tuple, sent: tuple) -> list[list[str]]:
    """The delta from `was` to `sent`: the ID an enrollment leaves tobedeleted, the one it
    takes active (together, a rename)."""
    changes = []
    for row, before, now in zip(table[1 : CHANGED + 1], was, sent, strict=True):
        if before == now:
            continue
        if before is not None:
            changes.append([as_sent(row, before)[0], "tobedeleted", *row[2:]])
        if now is not None:
            changes.append([as_sent(row, now)[0], "active", *row[2:]])
    return changes
