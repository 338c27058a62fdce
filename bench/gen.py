"""Seeded generator of synthetic OneRoster 1.1 bulk districts, and of "next night's" copy.

Why: the import benchmark (bench/run.py) needs districts of any size, up to the 5M-enrollment
target, that are identical from run to run (same seed, same bytes) and referentially clean, so
that every timing difference comes from the importer and not from the data.

    python bench/gen.py OUTDIR --students 500000 [--teachers ...] [--seed 1] [--zip]
    python bench/gen.py change SRC DST --share 0.01 [--seed 1]

Rows are streamed to disk: memory holds the class and teacher IDs (and, for `change`, the IDs
per school), never the enrollments. A JSON summary of the row counts is printed on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import shutil
import sys
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

# Ratios of the big target district: 500k students, 30k teachers, 200k classes, 5M enrollments,
# 1000 schools, 5000 courses.
TARGET = {
    "students": 500_000,
    "teachers": 30_000,
    "classes": 200_000,
    "enrollments": 5_000_000,
    "schools": 1_000,
    "courses": 5_000,
}

# The exact header line of each bulk file (docs/reference/formats.md section 2: OneRoster 1.1,
# in order).
HEADER_LINES = {
    "orgs": "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId",
    "academicSessions": (
        "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear"
    ),
    "courses": (
        "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,"
        "orgSourcedId,subjects,subjectCodes"
    ),
    "classes": (
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,"
        "location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods"
    ),
    "users": (
        "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,"
        "givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,"
        "password"
    ),
    "enrollments": (
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,"
        "primary,beginDate,endDate"
    ),
    "demographics": (
        "sourcedId,status,dateLastModified,birthDate,sex,americanIndianOrAlaskaNative,asian,"
        "blackOrAfricanAmerican,nativeHawaiianOrOtherPacificIslander,white,"
        "demographicRaceTwoOrMoreRaces,hispanicOrLatinoEthnicity,countryOfBirthCode,"
        "stateOfBirthAbbreviation,cityOfBirth,publicSchoolResidenceStatus"
    ),
}
HEADERS = {name: line.split(",") for name, line in HEADER_LINES.items()}
BULK_FILES = list(HEADERS)
ABSENT_FILES = [
    "categories",
    "classResources",
    "courseResources",
    "lineItems",
    "resources",
    "results",
]

YEAR_START, YEAR_END = "2025-08-15", "2026-06-12"
TERM_START, TERM_END = "2025-08-15", "2026-01-16"
EARLY_END = "2025-12-19"  # "changed" enrollments: the student left before the term ended
EMAIL_DOMAIN = "bench-usd.example.org"

# Names include accents and apostrophes on purpose (encoding and quoting paths of the importer);
# none contains a comma, a quote or a newline, so rows built from them need no CSV quoting.
GIVEN = (  # noqa: SIM905 (a word list reads better than a list literal)
    "Ana Amélie Ángel Björn Chloé Ciarán Dana D'Andre Élodie Ethan François Grace Hana "
    "Iñaki Isabella Jamal José Kai Laila Léa Liam Maya Mateo Nadia Noah Olivia Omar Priya "
    "Renée Ruth Sofía Søren Tomás Uma Wei Yusuf Zoë Zuzanna Łukasz"
).split()
FAMILY = (  # noqa: SIM905 (a word list reads better than a list literal)
    "Adams Álvarez Brown Chen D'Amico Dubois García Gómez Hernández Ibáñez Jackson Jones "
    "Kowalczyk Lee López Martin Müller Nguyễn O'Brien O'Connor Patel Pérez Ramírez Rossi "
    "Smith Søndergaard Taylor Thompson Wang Williams Wilson Yılmaz Zhang Ødegård"
).split()
GRADES = ["KG", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]
SUBJECTS = [
    "Mathematics",
    "English Language Arts",
    "Science",
    "Social Studies",
    "Art",
    "Music",
    "Physical Education",
    "World Languages",
    "Computer Science",
    "Health",
]
CITIES = ["Springfield", "Riverside", "Fairview", "Georgetown", "Salem", "Franklin", "Clinton"]
STATES = ["CA", "TX", "NY", "IL", "WA", "OH", "GA", "NC"]
RACES = 6  # the six race booleans of demographics.csv, one of which is true
_RACE_FLAGS = [",".join("true" if r == n else "false" for r in range(RACES)) for n in range(RACES)]


_NO_DECOMPOSITION = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ı": "i", "ß": "ss"})


def _ascii(name: str) -> str:
    """Lower-case ASCII form of a name for usernames and e-mail addresses."""
    name = name.translate(_NO_DECOMPOSITION)
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum()) or "x"


GIVEN_ASCII = [_ascii(n) for n in GIVEN]
FAMILY_ASCII = [_ascii(n) for n in FAMILY]
for _n in GIVEN + FAMILY:
    assert not set(_n) & set(',"\r\n'), _n


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def guids(rng: random.Random, n: int) -> list[str]:
    """`n` random, version-4-shaped 36-character GUIDs drawn from `rng` (reproducible per seed).

    Drawn in one batch of bytes: GUID formatting is the generator's main cost at 5M rows.
    """
    h = rng.randbytes(16 * n).hex()
    return [
        f"{h[o : o + 8]}-{h[o + 8 : o + 12]}-4{h[o + 13 : o + 16]}-"
        f"{_VARIANT[h[o + 16]]}{h[o + 17 : o + 20]}-{h[o + 20 : o + 32]}"
        for o in range(0, 32 * n, 32)
    ]


def guid(rng: random.Random) -> str:
    """One GUID, as `guids`."""
    return guids(rng, 1)[0]


class _Picker:
    """Draws k distinct items of a list cheaply: a random start and a stride coprime to its length.

    random.sample costs ~9 us per student; this costs ~1 us and still spreads every student
    over different classes, which is all the benchmark needs.
    """

    def __init__(self, items: list[str]) -> None:
        self.items = items
        m = len(items)
        self.strides = [d for d in range(1, m) if math.gcd(d, m) == 1] or [1]

    def pick(self, rng: random.Random, k: int) -> list[str]:
        items, m = self.items, len(self.items)
        start, stride = int(rng.random() * m), self.strides[int(rng.random() * len(self.strides))]
        return [items[(start + stride * n) % m] for n in range(k)]


@dataclass
class Size:
    """Row counts of one district (`enrollments` includes the one teacher row per class)."""

    students: int
    teachers: int
    classes: int
    enrollments: int
    schools: int
    courses: int

    @classmethod
    def scaled(cls, students: int, **given: int | None) -> Size:
        """Fill every count not given from `students` with the ratios of the big target."""
        counts: dict[str, int] = {"students": students}
        for key, big in TARGET.items():
            if key == "students":
                continue
            value = given.get(key)
            if value is None:
                value = max(1, round(students * big / TARGET["students"]))
            counts[key] = value
        return cls(**counts)

    def check(self) -> None:
        """Refuse sizes that cannot be referentially clean (every class needs a teacher, ...)."""
        if min(self.schools, self.teachers, self.classes, self.courses) < 1:
            raise ValueError("schools, teachers, classes and courses must be >= 1")
        if self.teachers < self.schools or self.classes < self.schools:
            raise ValueError("need at least one teacher and one class per school")
        if self.enrollments < self.classes:
            raise ValueError("enrollments must be >= classes (one teacher enrollment per class)")
        student_rows = self.enrollments - self.classes
        if student_rows and not self.students:
            raise ValueError("student enrollments requested but no students")
        per_student = -(-student_rows // self.students) if self.students else 0
        if per_student > self.classes // self.schools:
            raise ValueError(
                f"{per_student} enrollments per student but only "
                f"{self.classes // self.schools} classes per school"
            )


def _spread(total: int, parts: int) -> Iterator[int]:
    """Split `total` into `parts` near-equal integers (the first ones get the remainder)."""
    base, extra = divmod(total, parts) if parts else (0, 0)
    for i in range(parts):
        yield base + (1 if i < extra else 0)


def _writer(path: Path) -> tuple[TextIO, Any]:
    """Open a CSV file for writing with LF line ends, as gen.py writes every file."""
    fh = path.open("w", encoding="utf-8", newline="", buffering=1 << 20)
    return fh, csv.writer(fh, lineterminator="\n")


def _student_row(
    sid: str, school: str, i: int, rng: random.Random, tag: str = ""
) -> tuple[str, str]:
    """users.csv and demographics.csv lines for student number `i` (no field needs quoting).

    `tag` keeps usernames and identifiers of students added by `change` apart from the others.
    All random choices come from one 64-bit draw (randrange is slow at 500k students).
    """
    r = rng.getrandbits(64)
    r, g = divmod(r, len(GIVEN))
    r, f = divmod(r, len(FAMILY))
    r, race = divmod(r, RACES)
    r, month = divmod(r, 12)
    r, day = divmod(r, 28)
    r, state = divmod(r, len(STATES))
    r, city = divmod(r, len(CITIES))
    r, sex = divmod(r, 2)
    hispanic = r % 4 == 0
    username = f"{GIVEN_ASCII[g]}.{FAMILY_ASCII[f]}{tag}{i}"
    grade_index = i % len(GRADES)
    user = (
        f"{sid},,,true,{school},student,{username},,{GIVEN[g]},{FAMILY[f]},,{tag}{100000000 + i},"
        f"{username}@{EMAIL_DOMAIN},,,,{GRADES[grade_index]},\n"
    )
    demo = (
        f"{sid},,,{2019 - grade_index}-{month + 1:02d}-{day + 1:02d},{('male', 'female')[sex]},"
        f"{_RACE_FLAGS[race]},{'true' if hispanic else 'false'},US,{STATES[state]},"
        f"{CITIES[city]},\n"
    )
    return user, demo


def _teacher_row(tid: str, school: str, t: int, rng: random.Random, tag: str = "t") -> str:
    """users.csv line for teacher number `t`."""
    g, f = rng.randrange(len(GIVEN)), rng.randrange(len(FAMILY))
    username = f"{GIVEN_ASCII[g]}.{FAMILY_ASCII[f]}.{tag}{t}"
    return (
        f"{tid},,,true,{school},teacher,{username},,{GIVEN[g]},{FAMILY[f]},,{tag}{900000 + t},"
        f"{username}@{EMAIL_DOMAIN},,,,,\n"
    )


def _enrollment(eid: str, cls: str, school: str, user: str, role: str, primary: str) -> str:
    return f"{eid},,,{cls},{school},{user},{role},{primary},{TERM_START},{TERM_END}\n"


def write_manifest(out: Path) -> None:
    fh, w = _writer(out / "manifest.csv")
    with fh:
        w.writerow(["propertyName", "value"])
        w.writerow(["manifest.version", "1.0"])
        w.writerow(["oneroster.version", "1.1"])
        for name in sorted(BULK_FILES + ABSENT_FILES, key=str.lower):
            w.writerow([f"file.{name}", "bulk" if name in BULK_FILES else "absent"])
        w.writerow(["source.systemName", "rosterdrop bench/gen.py"])
        w.writerow(["source.systemCode", "rosterdrop-bench"])


def generate(out: Path, size: Size, seed: int = 1) -> dict[str, int]:
    """Write one bulk district into `out`; return the data rows written per file."""
    size.check()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows: dict[str, int] = {}
    write_manifest(out)

    district = guid(rng)
    schools = [guid(rng) for _ in range(size.schools)]
    fh, w = _writer(out / "orgs.csv")
    with fh:
        w.writerow(HEADERS["orgs"])
        w.writerow([district, "", "", "Bench Unified School District", "district", "0600001", ""])
        for s, sid in enumerate(schools):
            kind = ("Elementary", "Middle", "High")[s % 3]
            name = f"{FAMILY[s % len(FAMILY)]} {kind} School No. {s + 1}"
            w.writerow([sid, "", "", name, "school", f"06{s:08d}", district])
    rows["orgs"] = 1 + size.schools

    year, term = guid(rng), guid(rng)
    fh, w = _writer(out / "academicSessions.csv")
    with fh:
        w.writerow(HEADERS["academicSessions"])
        w.writerow([year, "", "", "2025-2026", "schoolYear", YEAR_START, YEAR_END, "", "2026"])
        w.writerow([term, "", "", "Fall 2025", "term", TERM_START, TERM_END, year, "2026"])
    rows["academicSessions"] = 2

    courses: list[tuple[str, str, str]] = []  # (sourcedId, title, subject)
    fh, w = _writer(out / "courses.csv")
    with fh:
        w.writerow(HEADERS["courses"])
        for c in range(size.courses):
            subject = SUBJECTS[c % len(SUBJECTS)]
            grade = GRADES[(c // len(SUBJECTS)) % len(GRADES)]
            title = f"{subject} {grade}" + (f" {c // 130 + 1}" if c >= 130 else "")
            cid = guid(rng)
            courses.append((cid, title, subject))
            w.writerow([cid, "", "", year, title, f"C{c:05d}", grade, district, subject, ""])
    rows["courses"] = size.courses

    # Class j belongs to school j % schools; its teacher is a teacher of the same school.
    teachers = [guid(rng) for _ in range(size.teachers)]
    classes_by_school: list[list[str]] = [[] for _ in schools]
    class_teacher: list[tuple[str, str, str]] = []  # (class, school, teacher)
    fh, w = _writer(out / "classes.csv")
    with fh:
        w.writerow(HEADERS["classes"])
        for j in range(size.classes):
            s, nth = j % size.schools, j // size.schools
            in_school = size.teachers // size.schools + (s < size.teachers % size.schools)
            teacher = teachers[s + size.schools * (nth % in_school)]
            course_id, course_title, subject = courses[j % size.courses]
            homeroom = nth % 10 == 0
            period = str(1 + nth % 8)
            if nth % 25 == 7:
                period = f"{period},{1 + (nth + 1) % 8}"  # a block class: a quoted list
            cid = guid(rng)
            classes_by_school[s].append(cid)
            class_teacher.append((cid, schools[s], teacher))
            w.writerow(
                [
                    cid,
                    "",
                    "",
                    f"{'Homeroom' if homeroom else course_title} - P{period[0]} #{j}",
                    "",
                    course_id,
                    f"K{j:06d}",
                    "homeroom" if homeroom else "scheduled",
                    f"Room {100 + nth % 300}",
                    schools[s],
                    term,
                    "Homeroom" if homeroom else subject,
                    "",
                    period,
                ]
            )
    rows["classes"] = size.classes

    # users.csv, demographics.csv and enrollments.csv are written together, one student at a
    # time, so no student ID outlives its own loop iteration.
    ufh, uw = _writer(out / "users.csv")
    dfh, dw = _writer(out / "demographics.csv")
    efh, ew = _writer(out / "enrollments.csv")
    with ufh, dfh, efh:
        uw.writerow(HEADERS["users"])
        dw.writerow(HEADERS["demographics"])
        ew.writerow(HEADERS["enrollments"])
        uwrite, dwrite, ewrite = ufh.write, dfh.write, efh.write
        ids = guids(rng, len(class_teacher))
        for eid, (cid, school, teacher) in zip(ids, class_teacher, strict=True):
            ewrite(_enrollment(eid, cid, school, teacher, "teacher", "true"))
        del class_teacher, ids
        pickers = [_Picker(classes) for classes in classes_by_school]
        per_student = _spread(size.enrollments - size.classes, size.students)
        for i, k in enumerate(per_student):
            s = i % size.schools
            school = schools[s]
            sid, *ids = guids(rng, k + 1)
            user, demo = _student_row(sid, school, i, rng)
            uwrite(user)
            dwrite(demo)
            ewrite(
                "".join(
                    f"{eid},,,{cid},{school},{sid},student,,{TERM_START},{TERM_END}\n"
                    for eid, cid in zip(ids, pickers[s].pick(rng, k), strict=True)
                )
            )
        for t, tid in enumerate(teachers):
            uwrite(_teacher_row(tid, schools[t % size.schools], t, rng))
    rows["users"] = size.students + size.teachers
    rows["demographics"] = size.students
    rows["enrollments"] = size.enrollments
    return rows


# --- "next night's" copy ------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Yield (raw line, fields) for each data row; the header is skipped.

    gen.py never writes a newline inside a field, so one physical line is one record; lines
    without a quote are split directly, which is exact and much faster than csv.reader.
    """
    with path.open(encoding="utf-8", newline="", buffering=1 << 20) as fh:
        next(fh)
        for line in fh:
            body = line.rstrip("\r\n")
            fields = next(csv.reader([body])) if '"' in body else body.split(",")
            yield line, fields


def _csv_line(fields: list[str]) -> str:
    """One CSV line with quoting only where needed (a list value such as periods "1,2")."""
    return (
        ",".join(
            f'"{v.replace(chr(34), chr(34) * 2)}"' if "," in v or '"' in v else v for v in fields
        )
        + "\n"
    )


@dataclass
class FileChange:
    """What `change` did to one file (rows are data rows, header excluded)."""

    rows_in: int = 0
    removed: int = 0  # chosen at random
    removed_cascade: int = 0  # referenced a removed user, class or course
    changed: int = 0
    added: int = 0
    rows_out: int = 0


_Row = list[str]


class _Rewrite:
    """Copy one file removing and changing about `share` of its rows, then take added rows.

    Used as `with _Rewrite(...) as rw: rw.add(row)`. Entering makes two passes over `src`: the
    first counts the rows that must go (`dropped`: they reference something removed) or must
    change (`forced_change`); the second picks the random removals and changes among the other
    rows, so that the file loses and changes about `share` of its rows in all, and streams the
    copy (kept rows byte for byte). Rows given to `add` are appended; leaving closes the file.
    With `random_removals=False` rows go only through `dropped` (demographics follow users).
    """

    def __init__(
        self,
        src: Path,
        dst: Path,
        share: float,
        rng: random.Random,
        change: Callable[[_Row], _Row],
        dropped: Callable[[_Row], bool] = lambda f: False,
        forced_change: Callable[[_Row], bool] = lambda f: False,
        on_removed: Callable[[_Row], object] = lambda f: None,
        on_kept: Callable[[_Row], object] = lambda f: None,
        random_removals: bool = True,
    ) -> None:
        self.src, self.dst, self.share, self.rng = src, dst, share, rng
        self.change, self.dropped, self.forced_change = change, dropped, forced_change
        self.on_removed, self.on_kept = on_removed, on_kept
        self.random_removals = random_removals
        self.stats = FileChange()

    def __enter__(self) -> _Rewrite:
        fc = self.stats
        for _, fields in _lines(self.src):
            fc.rows_in += 1
            if self.dropped(fields):
                fc.removed_cascade += 1
            elif self.forced_change(fields):
                fc.changed += 1
        target = round(self.share * fc.rows_in)
        free = fc.rows_in - fc.removed_cascade - fc.changed
        n_remove = min(free, max(0, target - fc.removed_cascade)) if self.random_removals else 0
        n_change = min(free - n_remove, max(0, target - fc.changed))
        picked = self.rng.sample(range(free), n_remove + n_change)
        to_remove, to_change = set(picked[:n_remove]), set(picked[n_remove:])
        fc.removed, fc.changed = n_remove, fc.changed + n_change
        fc.rows_out = fc.rows_in - fc.removed - fc.removed_cascade

        with self.src.open(encoding="utf-8", newline="") as fh:
            header = fh.readline()
        self.out = self.dst.open("w", encoding="utf-8", newline="", buffering=1 << 20)
        write = self.out.write
        write(header)
        free_no = 0
        for line, fields in _lines(self.src):
            if self.dropped(fields):
                self.on_removed(fields)
                continue
            if self.forced_change(fields):
                write(_csv_line(self.change(fields)))
            else:
                no, free_no = free_no, free_no + 1
                if no in to_remove:
                    self.on_removed(fields)
                    continue
                write(_csv_line(self.change(fields)) if no in to_change else line)
            self.on_kept(fields)
        return self

    def add(self, fields: _Row) -> None:
        self.out.write(_csv_line(fields))
        self.stats.added += 1
        self.stats.rows_out += 1

    def __exit__(self, *exc: object) -> None:
        self.out.close()


def make_change(src: Path, dst: Path, share: float = 0.01, seed: int = 1) -> dict[str, dict]:
    """Write `dst`, a copy of district `src` with `share` of the rows removed, changed and added.

    Referential integrity is kept: enrollments and demographics of removed users go with them,
    enrollments of removed classes too, and classes of a removed course move to another course
    (a change). New users are spread over the schools; new students get a demographics row and
    enrollments in classes of their school; new classes get a primary teacher enrollment.
    orgs, academicSessions and the manifest are copied as they are.
    """
    rng = random.Random(f"change:{seed}")
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("manifest", "orgs", "academicSessions"):
        shutil.copyfile(src / f"{name}.csv", dst / f"{name}.csv")
    report: dict[str, dict] = {}
    orgs = [f for _, f in _lines(src / "orgs.csv")]
    schools = [f[0] for f in orgs if f[4] == "school"]
    district = next(f[0] for f in orgs if f[4] == "district")
    term = next(f[0] for _, f in _lines(src / "academicSessions.csv") if f[4] == "term")
    year = next(f[3] for _, f in _lines(src / "courses.csv"))

    removed_courses: set[str] = set()
    kept_courses: list[str] = []
    with _Rewrite(
        src / "courses.csv",
        dst / "courses.csv",
        share,
        rng,
        change=lambda f: [*f[:4], f"{f[4]} (Revised)", *f[5:]],
        on_removed=lambda f: removed_courses.add(f[0]),
        on_kept=lambda f: kept_courses.append(f[0]),
    ) as rw:
        for n in range(round(share * rw.stats.rows_in)):
            cid = guid(rng)
            kept_courses.append(cid)
            rw.add(
                [cid, "", "", year, f"Elective {n + 1}", f"N{n:05d}", "", district, "Elective", ""]
            )
    report["courses"] = asdict(rw.stats)

    classes_by_school: dict[str, list[str]] = {s: [] for s in schools}
    removed_classes: set[str] = set()
    new_classes: list[tuple[str, str]] = []
    with _Rewrite(
        src / "classes.csv",
        dst / "classes.csv",
        share,
        rng,
        change=lambda f: [
            *f[:3],
            f"{f[3]} (moved)",
            f[4],
            rng.choice(kept_courses) if f[5] in removed_courses else f[5],
            *f[6:],
        ],
        forced_change=lambda f: f[5] in removed_courses,
        on_removed=lambda f: removed_classes.add(f[0]),
        on_kept=lambda f: classes_by_school[f[9]].append(f[0]),
    ) as rw:
        for n in range(round(share * rw.stats.rows_in)):
            cid, school = guid(rng), rng.choice(schools)
            new_classes.append((cid, school))
            classes_by_school[school].append(cid)
            rw.add(
                [cid, "", "", f"New section {n + 1}", "", rng.choice(kept_courses), f"NEW{n:06d}"]
                + ["scheduled", "", school, term, "Elective", "", str(1 + n % 8)]
            )
    report["classes"] = asdict(rw.stats)

    removed_users: set[str] = set()
    teachers_by_school: dict[str, list[str]] = {s: [] for s in schools}
    kept_students = 0

    def keep_user(f: _Row) -> None:
        nonlocal kept_students
        if f[5] == "teacher":
            teachers_by_school[f[4]].append(f[0])
        elif f[5] == "student":
            kept_students += 1

    def change_user(f: _Row) -> _Row:
        family = rng.choice([n for n in FAMILY if n != f[9]])
        local, _, domain = f[12].partition("@")
        return [*f[:9], family, f[10], f[11], f"{local}.{_ascii(family)}@{domain}", *f[13:]]

    new_students: list[tuple[str, str, str]] = []  # (sourcedId, school, demographics line)
    with _Rewrite(
        src / "users.csv",
        dst / "users.csv",
        share,
        rng,
        change=change_user,
        on_removed=lambda f: removed_users.add(f[0]),
        on_kept=keep_user,
    ) as rw:
        n_new = round(share * rw.stats.rows_in)
        n_new_students = round(n_new * kept_students / max(1, rw.stats.rows_out))
        for n in range(n_new):
            uid, school = guid(rng), rng.choice(schools)
            if n < n_new_students:
                user, demo = _student_row(uid, school, n, rng, tag=".n")
                new_students.append((uid, school, demo))
            else:
                user = _teacher_row(uid, school, n, rng, tag="n")
                teachers_by_school[school].append(uid)
            rw.add(user.rstrip("\n").split(","))
    report["users"] = asdict(rw.stats)

    with _Rewrite(
        src / "demographics.csv",
        dst / "demographics.csv",
        share,
        rng,
        change=lambda f: [*f[:14], "Hillcrest" if f[14] == "Lakeside" else "Lakeside", *f[15:]],
        dropped=lambda f: f[0] in removed_users,
        random_removals=False,
    ) as rw:
        for _, _, demo in new_students:
            rw.add(demo.rstrip("\n").split(","))
    report["demographics"] = asdict(rw.stats)

    with _Rewrite(
        src / "enrollments.csv",
        dst / "enrollments.csv",
        share,
        rng,
        change=lambda f: [*f[:9], EARLY_END],
        dropped=lambda f: f[3] in removed_classes or f[5] in removed_users,
    ) as rw:
        n_new = round(share * rw.stats.rows_in)
        for cid, school in new_classes:
            if teachers_by_school[school]:
                tid = rng.choice(teachers_by_school[school])
                rw.add(
                    [guid(rng), "", "", cid, school, tid, "teacher", "true", TERM_START, TERM_END]
                )
        per_student = _spread(max(0, n_new - rw.stats.added), len(new_students))
        for (uid, school, _), k in zip(new_students, per_student, strict=True):
            pool = classes_by_school[school]
            for cid in rng.sample(pool, min(k, len(pool))):
                rw.add([guid(rng), "", "", cid, school, uid, "student", "", TERM_START, TERM_END])
    report["enrollments"] = asdict(rw.stats)
    return report


def write_zip(out: Path) -> Path:
    """Zip the district's CSV files at the archive root, as a SIS upload would be."""
    target = out.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in sorted(out.glob("*.csv")):
            zf.write(path, arcname=path.name)
    return target


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "change":
        p = argparse.ArgumentParser(prog="gen.py change", description=make_change.__doc__)
        p.add_argument("src", type=Path)
        p.add_argument("dst", type=Path)
        p.add_argument("--share", type=float, default=0.01)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--zip", action="store_true", help="also write DST.zip")
        a = p.parse_args(argv[1:])
        started = time.perf_counter()
        report: dict = make_change(a.src, a.dst, a.share, a.seed)
        if a.zip:
            write_zip(a.dst)
    else:
        p = argparse.ArgumentParser(prog="gen.py", description=__doc__.splitlines()[0])
        p.add_argument("outdir", type=Path)
        p.add_argument("--students", type=int, default=5_000)
        for key in ("teachers", "classes", "enrollments", "schools", "courses"):
            p.add_argument(f"--{key}", type=int, default=None, help="default: scaled")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--zip", action="store_true", help="also write OUTDIR.zip")
        a = p.parse_args(argv)
        size = Size.scaled(
            a.students,
            teachers=a.teachers,
            classes=a.classes,
            enrollments=a.enrollments,
            schools=a.schools,
            courses=a.courses,
        )
        started = time.perf_counter()
        try:
            report = {"size": asdict(size), "rows": generate(a.outdir, size, a.seed)}
        except ValueError as exc:
            p.error(str(exc))
        if a.zip:
            write_zip(a.outdir)
    report["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
