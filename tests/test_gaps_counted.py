"""The roster's gaps counted from what a sync changed (ingest.gaps) are those a count over the
whole district finds: the same counts and the same first IDs, after every sync of a random
sequence that moves students, teachers, classes, parents and schools in and out of them."""

import itertools
import json
import shutil
from pathlib import Path

import pytest
from conftest import DISTRICT_LARGE
from django.db import connection
from helpers import rows, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.districts.models import District
from rosterdrop.ingest import gaps
from rosterdrop.ingest.models import RosterGaps
from rosterdrop.ingest.syncs import import_path
from rosterdrop.roster import store

pytestmark = pytest.mark.django_db(transaction=True)

PICK = st.integers(min_value=0, max_value=10_000)
# Each edit of the school's files, in the words of its data (a row picked by number).
EDITS = st.one_of(
    st.tuples(st.just("drop enrollment"), PICK),
    st.tuples(st.just("enrollment role"), PICK, st.sampled_from(["student", "teacher", "aide"])),
    st.tuples(st.just("enrollment user"), PICK, PICK),
    st.tuples(st.just("enrollment class"), PICK, PICK),
    st.tuples(st.just("enrollment end date"), PICK),
    st.tuples(st.just("new enrollment"), PICK, PICK, PICK),
    st.tuples(st.just("drop user"), PICK),
    st.tuples(
        st.just("user role"),
        PICK,
        st.sampled_from(["student", "teacher", "parent", "Guardian", "aide", "administrator"]),
    ),
    st.tuples(st.just("user agent"), PICK, PICK),
    st.tuples(st.just("user school"), PICK, st.sampled_from(["", "new-school", "new-office"])),
    st.tuples(st.just("user name"), PICK),
    st.tuples(st.just("new user"), PICK),
    st.tuples(st.just("renamed user"), PICK),
    st.tuples(st.just("drop class"), PICK),
    st.tuples(st.just("new class"), PICK),
    st.tuples(st.just("school type"), st.sampled_from(["school", "district"])),
    st.tuples(st.just("new org"), st.sampled_from(["school", "district"])),
)
SHOWN = 3  # few, so that the first IDs kept are not the whole gap and IDs leave them


def _row(table: list[list[str]], pick: int) -> list[str] | None:
    """A data row by number, or None for a file with none."""
    return table[1 + pick % (len(table) - 1)] if len(table) > 1 else None


def _sparse(table: list[list[str]], pick: int, column: int) -> list[str] | None:
    """A row, for an even `pick` one whose `column` names a record the edits added (few
    rows name it, so that moving it moves that record in or out of a gap), if any."""
    added = [r for r in table[1:] if r[column].startswith(("u-new", "c-new", "u-renamed"))]
    if pick % 2 == 0 and added:
        return added[pick // 2 % len(added)]
    return _row(table, pick)


def _apply(school: Path, edit: tuple, n: int) -> None:
    """One edit of the files in `school`; `n` makes new IDs unique."""
    files = {f: rows(school / f"{f}.csv") for f in ("orgs", "users", "classes", "enrollments")}
    users, classes, enrollments = files["users"], files["classes"], files["enrollments"]
    column = {f: {c: i for i, c in enumerate(t[0])} for f, t in files.items()}
    u, c, e = column["users"], column["classes"], column["enrollments"]
    match edit:
        case ("drop enrollment", pick) if len(enrollments) > 1:
            del enrollments[1 + pick % (len(enrollments) - 1)]
        case ("enrollment role", pick, role) if row := _sparse(
            enrollments, pick, e["classSourcedId"]
        ):
            row[e["role"]] = role
        case ("enrollment user", pick, other) if row := _sparse(
            enrollments, pick, e["userSourcedId"]
        ):
            if (user := _sparse(users, other, u["sourcedId"])) is not None:
                row[e["userSourcedId"]] = user[u["sourcedId"]]
        case ("enrollment class", pick, other) if row := _sparse(
            enrollments, pick, e["classSourcedId"]
        ):
            if (klass := _sparse(classes, other, c["sourcedId"])) is not None:
                row[e["classSourcedId"]] = klass[c["sourcedId"]]
        case ("enrollment end date", pick) if row := _row(enrollments, pick):
            row[e["endDate"]] = "2026-05-01" if row[e["endDate"]] != "2026-05-01" else "2026-06-10"
        case ("new enrollment", pick, user_pick, class_pick) if row := _row(enrollments, pick):
            user = _sparse(users, user_pick, u["sourcedId"])
            klass = _sparse(classes, class_pick, c["sourcedId"])
            if user is not None and klass is not None:
                new = [*row]
                new[e["sourcedId"]] = f"e-new-{n}"
                new[e["userSourcedId"]] = user[u["sourcedId"]]
                new[e["classSourcedId"]] = klass[c["sourcedId"]]
                enrollments.append(new)
        case ("drop user", pick) if len(users) > 2:
            del users[1 + pick % (len(users) - 1)]
        case ("user role", pick, role) if row := _row(users, pick):
            row[u["role"]] = role
        case ("user agent", pick, other) if row := _row(users, pick):
            if (agent := _row(users, other)) is not None:
                row[u["agentSourcedIds"]] = agent[u["sourcedId"]]
        case ("user school", pick, school_id) if row := _row(users, pick):
            known = {r[0] for r in files["orgs"][1:]}
            row[u["orgSourcedIds"]] = school_id if school_id in known else ""
        case ("user name", pick) if row := _row(users, pick):
            row[u["familyName"]] += "x"
        case ("new user", pick) if row := _row(users, pick):
            users.append(_new_user(row, u, f"u-new-{n}"))
        case ("renamed user", pick) if row := _row(users, pick):
            # The same username under a new ID: a rename (plan: matched by natural key).
            row[u["sourcedId"]] = f"u-renamed-{n}"
        case ("drop class", pick) if len(classes) > 2:
            del classes[1 + pick % (len(classes) - 1)]
        case ("new class", pick) if row := _row(classes, pick):
            classes.append([f"c-new-{n}", *row[1:]])
        case ("school type", kind):
            files["orgs"][1][column["orgs"]["type"]] = kind
        case ("new org", kind):
            new_id = "new-school" if kind == "school" else "new-office"
            if new_id not in {r[0] for r in files["orgs"][1:]}:
                files["orgs"].append([new_id, *files["orgs"][1][1:4], kind, f"9{n}", ""])
    for name, table in files.items():
        write(school / f"{name}.csv", table)


def _new_user(row: list[str], u: dict[str, int], user_id: str) -> list[str]:
    new = [*row]
    new[u["sourcedId"]] = user_id
    for name in ("username", "email", "identifier"):
        new[u[name]] = f"{user_id}-{row[u[name]]}"
    return new


def _imported_then_changed(district: District, school: Path, edits: list[tuple]) -> None:
    """The school imported, then `edits` made to its files (`_apply`), not imported yet."""
    assert import_path(district, school).status == "applied"
    for n, edit in enumerate(edits):
        _apply(school, edit, n)


def _in_full(district: District) -> tuple[dict[str, int], dict[str, list[str]]]:
    counted = {kind: gaps.in_full(found) for kind, found in gaps.queries(district.pk).items()}
    return {k: n for k, (n, _) in counted.items()}, {k: ids for k, (_, ids) in counted.items()}


def _every(district: District) -> dict[str, set[str]]:
    return {
        kind: set(found.values_list("sourced_id", flat=True))
        for kind, found in gaps.queries(district.pk).items()
    }


@pytest.fixture
def counted_from_changes(monkeypatch) -> list[bool]:
    """Every share counted from the changes (the school is small: a few edits are a large
    share of it), and a few IDs shown; whether each applied sync counted from the changes."""
    monkeypatch.setattr(gaps, "SHOWN", SHOWN)
    monkeypatch.setattr(gaps, "CHANGED_SHARE", 1.0)
    monkeypatch.setattr(gaps, "LOOKUP_SHARE", 2.0)
    seen: list[bool] = []
    real = gaps.before

    def before(*args, **kwargs):
        counted = real(*args, **kwargs)
        seen.append(counted is not None and bool(counted.after))
        return counted

    monkeypatch.setattr(gaps, "before", before)
    return seen


SLUGS = itertools.count()


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    syncs=st.lists(st.lists(EDITS, min_size=1, max_size=6), min_size=1, max_size=4),
    known=st.sampled_from([0, 4, 10_000]),  # gaps whose every ID is kept: none, some, all
)
def test_gaps_counted_from_the_changes_are_a_full_count(
    db, school, tmp_path, monkeypatch, counted_from_changes, syncs, known
):
    monkeypatch.setattr(gaps, "KNOWN", known)
    district = District.objects.create(
        slug=f"gaps-{next(SLUGS)}", name="Gaps", format="oneroster-1.1"
    )
    sent = tmp_path / f"sent-{district.pk}"
    shutil.copytree(school, sent)
    assert import_path(district, sent).status == "applied"
    counted_from_changes.clear()
    for n, edits in enumerate(syncs):
        for m, edit in enumerate(edits):
            _apply(sent, edit, n * 10 + m)
        sync = import_path(district, sent)
        kept = RosterGaps.objects.get(district=district)
        counts, shown = _in_full(district)
        assert (kept.counts, kept.shown) == (counts, shown), (sync.status, edits)
        # Every ID kept of a gap is every ID of it (kept of at most `known` records).
        every = _every(district)
        assert {k: set(ids) for k, ids in kept.known.items()} == {k: every[k] for k in kept.known}
        assert all(len(ids) <= known for ids in kept.known.values())
    # Each applied sync after the first counted from its changes (every share allowed).
    assert all(counted_from_changes)


def test_a_sync_after_a_count_on_another_roster_counts_in_full(
    district, school, counted_from_changes
):
    """Gaps kept for another roster (a count older than the token, or a roster changed
    since) are not counted from: the sync counts them over the whole district."""
    assert import_path(district, school).status == "applied"
    RosterGaps.objects.filter(district=district).update(token=None, counts={}, shown={})
    counted_from_changes.clear()
    _apply(school, ("drop enrollment", 0), 0)
    assert import_path(district, school).status == "applied"
    assert counted_from_changes == [False]
    kept = RosterGaps.objects.get(district=district)
    assert (kept.counts, kept.shown) == _in_full(district)


def test_a_nightly_change_counts_every_gap_from_what_it_changed(
    district, school, monkeypatch, counted_from_changes
):
    """Users, classes and enrollments added and removed, end dates and names changed: no gap
    is counted over the whole district."""
    _imported_then_changed(
        district,
        school,
        [
            ("drop enrollment", 5),
            ("drop enrollment", 40),
            ("new user", 7),
            ("new class", 3),
            ("new enrollment", 0, 9, 4),
            ("enrollment end date", 2),
            ("user name", 12),
        ],
    )
    in_full = []
    every = gaps._every
    monkeypatch.setattr(gaps, "_every", lambda found: in_full.append(found) or every(found))
    counted_from_changes.clear()
    assert import_path(district, school).status == "applied"
    assert (counted_from_changes, in_full) == ([True], [])
    kept = RosterGaps.objects.get(district=district)
    assert (kept.counts, kept.shown) == _in_full(district)


def test_an_enrollment_moved_to_another_class_moves_both_classes(
    district, school, counted_from_changes
):
    """An update that changes what an enrollment names (here its class, to a class nobody
    was in): the classes it named before and after can move, and are counted."""
    _apply(school, ("new class", 0), 0)
    assert import_path(district, school).status == "applied"
    kept = RosterGaps.objects.get(district=district)
    assert "c-new-0" in kept.known["classes_without_students"]
    enrollments = rows(school / "enrollments.csv")
    student = next(r for r in enrollments[1:] if r[enrollments[0].index("role")] == "student")
    student[enrollments[0].index("classSourcedId")] = "c-new-0"
    write(school / "enrollments.csv", enrollments)
    assert import_path(district, school).status == "applied"
    kept = RosterGaps.objects.get(district=district)
    assert "c-new-0" not in kept.known["classes_without_students"]
    assert (kept.counts, kept.shown) == _in_full(district)


def test_postgresql_counts_the_gaps_of_a_grown_roster_without_a_probe_per_record(district):
    """A sync that adds many records counts its gaps in its transaction, before any statistics
    describe them (store.refresh_statistics makes them after the commit). PostgreSQL then took
    a district's enrollments for a row or two and, for each class, walked all of them (the
    first import of district-large: 33-55 s in the applying transaction, and minutes at 100k
    enrollments). Counted over tables whose statistics it made stale, every gap is planned as
    a join of whole tables, with no nested loop (PostgreSQL's plans, told by auto_explain)."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner")
    plans: list[str] = []
    with connection.cursor() as cur:
        cur.execute("LOAD 'auto_explain'")
        cur.execute("SET auto_explain.log_min_duration = 0")
        cur.execute("SET auto_explain.log_level = notice")

    def explained(notice) -> None:
        plans.append(notice.message_primary)

    connection.connection.add_notice_handler(explained)
    try:
        import_path(district, DISTRICT_LARGE)
    finally:
        connection.connection.remove_notice_handler(explained)
        with connection.cursor() as cur:
            cur.execute("SET auto_explain.log_min_duration = -1")
    counted = [plan for plan in plans if "NOT (EXISTS(" in plan]
    assert len(counted) == len(gaps.KINDS), plans
    for plan in counted:
        assert "Nested Loop" not in plan, plan


def test_a_student_still_in_a_class_is_not_looked_up_after_apply(
    district, school, monkeypatch, counted_from_changes
):
    """A student whose enrollment the sync removes is a candidate of "students without
    classes"; one that another enrollment of the upload still names is known to be in a
    class after apply (gaps.upload_keeps_out): not looked up (at `huge`, ~48k random reads
    of the enrollments for the students of the 1% change's removed classes)."""
    assert import_path(district, school).status == "applied"
    enrollments = rows(school / "enrollments.csv")
    column = {c: i for i, c in enumerate(enrollments[0])}
    users = [r[column["userSourcedId"]] for r in enrollments[1:]]
    at, student = next(
        (n, r[column["userSourcedId"]])
        for n, r in enumerate(enrollments[1:], start=1)
        if r[column["role"]] == "student" and users.count(r[column["userSourcedId"]]) > 1
    )
    # Another student loses every enrollment: looked up, and now in the gap.
    alone = next(u for u in users if u != student and users.count(u) > 1)
    del enrollments[at]
    enrollments = [r for r in enrollments if r[column["userSourcedId"]] != alone]
    write(school / "enrollments.csv", enrollments)
    sought: dict[str, set[str]] = {}
    listed = store.listed

    def listing(cur, name, keys):
        sought[name] = set(keys)
        return listed(cur, name, keys)

    monkeypatch.setattr(store, "listed", listing)
    counted_from_changes.clear()
    assert import_path(district, school).status == "applied"
    assert counted_from_changes == [True]
    # "students_without_classes" is the first gap (rd_gap_after_0).
    assert student not in sought["rd_gap_after_0"]
    assert alone in sought["rd_gap_after_0"]
    kept = RosterGaps.objects.get(district=district)
    assert (kept.counts, kept.shown) == _in_full(district)


def _scanned_per_row(node: dict, repeated: bool = False, inner_of_loop: bool = False) -> set[str]:
    """The temporary lists of keys (rd_...) a plan scans whole once per row of another part:
    a sequential scan under a correlated subplan or on the inner side of a nested loop, with
    nothing between that keeps its rows (a hash, a materialized copy)."""
    how = node.get("Parent Relationship")
    if how == "SubPlan" and not node.get("Subplan Name", "").startswith("hashed"):
        repeated = True
    if how == "Inner" and inner_of_loop:
        repeated = True
    if node["Node Type"] in ("Hash", "Materialize", "Memoize"):
        repeated = False
    found = set()
    if repeated and node["Node Type"] == "Seq Scan" and node["Relation Name"].startswith("rd_"):
        found.add(node["Relation Name"])
    loop = node["Node Type"] == "Nested Loop"
    for child in node.get("Plans", ()):
        found |= _scanned_per_row(child, repeated, loop)
    return found


def test_postgresql_seeks_each_listed_key_by_the_index_of_its_list(
    district, school, monkeypatch, counted_from_changes
):
    """Every statement over a temporary list of keys (store._keyed_table: apply's updated,
    removed and renamed records, the removed records' fields, the gaps' and the feed's lists)
    seeks a key of its list by the list's index, never by a scan of the whole list per record:
    the lists' keys and the roster's source IDs compare in one collation
    (models.ByteOrdered). With a list's _key in the database's collation and the source IDs
    in "C", the lookup of each updated record's new values scanned the list once per record
    (huge's 1% change on PostgreSQL: 24 s -> 327 s, bench/README.md pgfirst26). Sequential
    scans are off, so that the planner scans a list only where its index cannot answer (on a
    few keys a scan is the cheaper plan). PostgreSQL's plans, told by auto_explain."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner")
    monkeypatch.setattr(gaps, "KNOWN", 0)  # the gaps' candidates looked up in lists
    _imported_then_changed(
        district,
        school,
        [
            ("enrollment end date", 2),
            ("enrollment end date", 3),
            ("drop enrollment", 5),
            ("drop enrollment", 40),
            ("drop user", 0),  # the administrator: nothing names them
            ("user name", 12),
            ("new enrollment", 0, 9, 4),
        ],
    )
    # An enrollment under a new ID, of the same class, user and role: renamed.
    enrollments = rows(school / "enrollments.csv")
    enrollments[10][enrollments[0].index("sourcedId")] = "e-renamed"
    write(school / "enrollments.csv", enrollments)
    plans: list[dict] = []
    settings = {"log_min_duration": "0", "log_format": "json", "log_level": "notice"}
    with connection.cursor() as cur:
        cur.execute("LOAD 'auto_explain'")
        for name, value in settings.items():
            cur.execute(f"SET auto_explain.{name} = {value}")
        cur.execute("SET enable_seqscan = off")

    def explained(notice) -> None:
        message = notice.message_primary
        if message.startswith("duration:"):  # auto_explain's, not another notice
            plans.append(json.loads(message[message.index("{") :]))

    connection.connection.add_notice_handler(explained)
    counted_from_changes.clear()
    try:
        assert import_path(district, school).status == "applied"
    finally:
        connection.connection.remove_notice_handler(explained)
        with connection.cursor() as cur:
            cur.execute("SET auto_explain.log_min_duration = -1")
            cur.execute("RESET enable_seqscan")
    assert counted_from_changes == [True]
    listing = [plan for plan in plans if " rd_" in plan["Query Text"]]
    lists = {
        name
        for plan in listing
        for name in ("rd_changed", "rd_removed", "rd_renamed", "rd_keys", "rd_feed_renamed")
        if name in plan["Query Text"]
    }
    assert lists == {"rd_changed", "rd_removed", "rd_renamed", "rd_keys", "rd_feed_renamed"}
    assert any("rd_gap_" in plan["Query Text"] for plan in listing)
    for plan in listing:
        assert not _scanned_per_row(plan["Plan"]), plan
