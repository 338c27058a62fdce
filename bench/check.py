"""Check a district written by gen.py, and what `gen.py change` did to it.

Why: a benchmark is only as good as its data. The importer must see a referentially clean
OneRoster 1.1 bulk set (or the timings measure error handling), and the change copy must hold
the shares it claims. Exits non-zero and prints every problem found.

    python bench/check.py DIR [--against BASE_DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from gen import ABSENT_FILES, BULK_FILES, HEADERS

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def rows(path: Path) -> Iterator[list[str]]:
    """Data rows of one CSV file, parsed by the csv module (the header is checked, not yielded)."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        expected = HEADERS[path.stem]
        if header != expected:
            raise SystemExit(f"{path.name}: header {header} != {expected}")
        yield from reader


class Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def expect(self, ok: bool, message: str) -> None:
        if not ok and len(self.problems) < 50:
            self.problems.append(message)

    def district(self, d: Path, ordered: bool = True) -> dict[str, int]:
        """Check one district; `ordered`: teachers' enrollments come first (base files only)."""
        counts: dict[str, int] = {}
        manifest = dict(csv.reader((d / "manifest.csv").open(encoding="utf-8")))
        self.expect(manifest.get("manifest.version") == "1.0", "manifest.version")
        self.expect(manifest.get("oneroster.version") == "1.1", "oneroster.version")
        for name in BULK_FILES:
            self.expect(manifest.get(f"file.{name}") == "bulk", f"file.{name} not bulk")
        for name in ABSENT_FILES:
            self.expect(manifest.get(f"file.{name}") == "absent", f"file.{name} not absent")
        present = {p.stem for p in d.glob("*.csv")}
        self.expect(present == {*BULK_FILES, "manifest"}, f"files present: {sorted(present)}")

        def common(name: str, row: list[str], seen: set[str]) -> None:
            self.expect(len(row) == len(HEADERS[name]), f"{name}: {len(row)} fields: {row}")
            self.expect(bool(GUID.match(row[0])), f"{name}: bad sourcedId {row[0]!r}")
            self.expect(row[1] == "" and row[2] == "", f"{name}: status/dateLastModified set")
            self.expect(row[0] not in seen, f"{name}: duplicate sourcedId {row[0]}")
            seen.add(row[0])

        orgs: dict[str, str] = {}
        for r in rows(d / "orgs.csv"):
            common("orgs", r, set(orgs))
            orgs[r[0]] = r[4]
        district = [k for k, v in orgs.items() if v == "district"]
        self.expect(len(district) == 1, "exactly one district")
        schools = {k for k, v in orgs.items() if v == "school"}
        for r in rows(d / "orgs.csv"):
            if r[4] == "school":
                self.expect(r[6] == district[0], f"school {r[0]} parent {r[6]}")
        counts["orgs"] = len(orgs)

        sessions: dict[str, list[str]] = {}
        for r in rows(d / "academicSessions.csv"):
            common("academicSessions", r, set(sessions))
            sessions[r[0]] = r
        terms = {k for k, r in sessions.items() if r[4] == "term"}
        years = {k for k, r in sessions.items() if r[4] == "schoolYear"}
        self.expect(len(terms) == 1 and len(years) == 1, "one term and one schoolYear")
        for t in terms:
            self.expect(sessions[t][7] in years, "term parent is the school year")
        counts["academicSessions"] = len(sessions)

        courses: set[str] = set()
        for r in rows(d / "courses.csv"):
            common("courses", r, courses)
            self.expect(r[3] in years, f"course {r[0]} schoolYear {r[3]}")
            self.expect(r[7] in orgs, f"course {r[0]} org {r[7]}")
            self.expect(bool(r[4]), f"course {r[0]} title")
        counts["courses"] = len(courses)

        class_school: dict[str, str] = {}
        for r in rows(d / "classes.csv"):
            common("classes", r, set())
            self.expect(r[0] not in class_school, f"classes: duplicate {r[0]}")
            class_school[r[0]] = r[9]
            self.expect(r[5] in courses, f"class {r[0]} course {r[5]}")
            self.expect(r[9] in schools, f"class {r[0]} school {r[9]}")
            self.expect(r[10] in terms, f"class {r[0]} term {r[10]}")
            self.expect(r[7] in ("homeroom", "scheduled"), f"class {r[0]} type {r[7]}")
            self.expect(bool(r[3]), f"class {r[0]} title")
        counts["classes"] = len(class_school)

        user_school: dict[str, str] = {}
        user_role: dict[str, str] = {}
        usernames: set[str] = set()
        for r in rows(d / "users.csv"):
            common("users", r, set())
            self.expect(r[0] not in user_school, f"users: duplicate {r[0]}")
            user_school[r[0]], user_role[r[0]] = r[4], r[5]
            self.expect(r[4] in schools, f"user {r[0]} org {r[4]}")
            self.expect(r[5] in ("student", "teacher"), f"user {r[0]} role {r[5]}")
            self.expect(r[3] == "true", f"user {r[0]} enabledUser")
            self.expect(r[6] not in usernames, f"user {r[0]} username {r[6]} not unique")
            usernames.add(r[6])
            self.expect(all(r[i] for i in (6, 8, 9, 12)), f"user {r[0]} names/email")
            self.expect(bool(r[16]) == (r[5] == "student"), f"user {r[0]} grades {r[16]!r}")
        counts["users"] = len(user_school)
        roles = Counter(user_role.values())
        counts["students"], counts["teachers"] = roles["student"], roles["teacher"]

        demographics: set[str] = set()
        for r in rows(d / "demographics.csv"):
            common("demographics", r, demographics)
            self.expect(user_role.get(r[0]) == "student", f"demographics {r[0]}: not a student")
        self.expect(len(demographics) == roles["student"], "one demographics row per student")
        counts["demographics"] = len(demographics)

        enrollment_ids: set[int] = set()
        pairs: set[int] = set()
        primaries: Counter[str] = Counter()
        n, students_started = 0, False
        for r in rows(d / "enrollments.csv"):
            n += 1
            self.expect(len(r) == 10 and bool(GUID.match(r[0])), f"enrollment {r}")
            self.expect(r[1] == "" and r[2] == "", f"enrollment {r[0]} status/dateLastModified")
            key = hash(r[0])
            self.expect(key not in enrollment_ids, f"enrollments: duplicate {r[0]}")
            enrollment_ids.add(key)
            pair = hash((r[3], r[5]))
            self.expect(pair not in pairs, f"enrollment {r[0]}: user twice in class")
            pairs.add(pair)
            self.expect(r[3] in class_school, f"enrollment {r[0]} class {r[3]}")
            self.expect(r[5] in user_school, f"enrollment {r[0]} user {r[5]}")
            self.expect(class_school.get(r[3]) == r[4], f"enrollment {r[0]}: school != class's")
            self.expect(user_role.get(r[5]) == r[6], f"enrollment {r[0]}: role != user's")
            if r[6] == "student":
                students_started = True
                self.expect(user_school.get(r[5]) == r[4], f"enrollment {r[0]}: other school")
                self.expect(r[7] == "", f"enrollment {r[0]}: student primary {r[7]!r}")
            else:
                self.expect(r[7] == "true", f"enrollment {r[0]}: teacher not primary")
                primaries[r[3]] += 1
                if ordered:
                    self.expect(not students_started, f"enrollment {r[0]}: teacher after students")
        self.expect(max(primaries.values(), default=0) <= 1, "at most one primary per class")
        if ordered:
            self.expect(len(primaries) == len(class_school), "every class has a primary teacher")
        counts["enrollments"] = n
        counts["classes_without_teacher"] = len(class_school) - len(primaries)
        return counts

    def diff(self, base: Path, new: Path) -> dict[str, dict[str, int]]:
        """Per file: rows removed, changed (same sourcedId, other content) and added."""
        out: dict[str, dict[str, int]] = {}
        for name in BULK_FILES:
            before = {hash(r[0]): hash(tuple(r)) for r in rows(base / f"{name}.csv")}
            removed = changed = added = 0
            seen = 0
            for r in rows(new / f"{name}.csv"):
                old = before.get(hash(r[0]))
                if old is None:
                    added += 1
                else:
                    seen += 1
                    changed += old != hash(tuple(r))
            removed = len(before) - seen
            out[name] = {
                "rows_in": len(before),
                "removed": removed,
                "changed": changed,
                "added": added,
            }
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--against", type=Path, help="base district: DIR is its change copy")
    a = p.parse_args()
    c = Checker()
    report: dict = {"counts": c.district(a.dir, ordered=a.against is None)}
    if a.against:
        report["diff"] = c.diff(a.against, a.dir)
    report["problems"] = c.problems
    print(json.dumps(report, indent=2))
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main())
