"""Records OneRoster requires that some formats never send, made up the same way wherever the
roster is served (REST and CSV export): a course for a class that names none (Clever,
ParentSquare, ALO), and the running school year for a class in no term."""

from dataclasses import dataclass
from datetime import date

COURSE_PREFIX = "rosterdrop-course-"
TERM_PREFIX = "rosterdrop-term-"


def course_for(class_id: str) -> str:
    """The made-up course of a class that names none."""
    return f"{COURSE_PREFIX}{class_id}"


@dataclass(frozen=True)
class SchoolYear:
    """The school year running on a day (August to July), named by the year it ends in."""

    year: int

    @classmethod
    def of(cls, day: date) -> "SchoolYear":
        return cls(day.year + 1 if day.month >= 8 else day.year)

    @classmethod
    def named(cls, sourced_id: str) -> "SchoolYear | None":
        tail = sourced_id.removeprefix(TERM_PREFIX)
        return cls(int(tail)) if sourced_id.startswith(TERM_PREFIX) and tail.isdigit() else None

    @property
    def sourced_id(self) -> str:
        return f"{TERM_PREFIX}{self.year}"

    @property
    def fields(self) -> dict[str, str]:
        return {
            "title": f"School year {self.year - 1}-{self.year}",
            "type": "schoolYear",
            "startDate": f"{self.year - 1}-08-01",
            "endDate": f"{self.year}-07-31",
            "schoolYear": str(self.year),
        }
