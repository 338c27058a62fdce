"""A district's state at a glance, and the sizes chart, for the operator dashboard."""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from rosterdrop.formats import get_format
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest.models import Sync

# A district is late once its expected interval and this much more pass without a file.
LATE_GRACE = timedelta(hours=1)
# An interrupted sync is the last only when its import was interrupted twice: it waits for a
# retry.
LAST_SYNC_FAILED = (Sync.Status.FAILED, Sync.Status.INTERRUPTED)
PROBLEM_UPLOADS = (Upload.Status.FAILED, Upload.Status.UNMATCHED)
MOVES = ("added", "updated", "removed", "reactivated")


@dataclass
class Glance:
    district: object
    state: str  # css class: ok, held, failed, late, paused, new, waiting, attention
    label: str
    last_upload: Upload | None
    last_sync: Sync | None


def glance(district) -> Glance:
    """The district's state as the latest thing that happened says it: a running, held or
    waiting import first; a failure only if nothing happened after it; a sync's errors."""
    last_upload = district.uploads.first()
    last_sync = district.syncs.filter(dry_run=False).first()
    waiting = district.uploads.filter(status=Upload.Status.RECEIVED).order_by("-received_at")
    problem = district.uploads.filter(status__in=PROBLEM_UPLOADS).first()
    since = last_sync.started_at if last_sync else None
    failed = (last_sync is not None and last_sync.status in LAST_SYNC_FAILED) or (
        problem is not None and (since is None or problem.received_at > since)
    )
    state, label = "ok", "Up to date"
    now = timezone.now()
    pause = district.pause_on(now)
    if district.paused or pause:
        state, label = "paused", f"Paused until {pause.ends_on:%b %-d}" if pause else "Paused"
        if n := waiting.count():
            label += f" ({n} file{'s' * (n != 1)} waiting)"
    elif last_sync and last_sync.status == Sync.Status.RUNNING:
        state, label = "running", "Importing…"
    elif last_sync and last_sync.status == Sync.Status.HELD:
        state, label = "held", "Held, awaiting approval"
        if last_sync.rollover:
            label = f"Held: term rollover to {last_sync.rollover['school_year']}"
    elif waiting.exists():
        state, label = "waiting", f"Waiting: imports at {_due(district, waiting):%H:%M}"
    elif failed:
        state, label = "failed", "Last upload failed"
    elif last_upload is None:
        state, label = "new", "No upload yet"
    elif (late := _late(district, last_upload, now)) is not None:
        state, label = "late", f"Late: no file for {late}, expected {district.cadence}"
    elif last_sync and (errors := last_sync.issues.filter(severity="error").count()):
        state, label = "attention", f"Needs attention ({errors} error{'s' * (errors != 1)})"
    return Glance(district, state, label, last_upload, last_sync)


def _late(district, last_upload: Upload, now: datetime) -> str | None:
    """How long the district has sent nothing, when that is past its expected cadence."""
    if not district.expected_every_hours:
        return None
    quiet = now - last_upload.received_at
    if quiet <= timedelta(hours=district.expected_every_hours) + LATE_GRACE:
        return None
    hours = int(quiet.total_seconds() // 3600)
    return f"{hours} h" if hours < 72 else f"{hours // 24} days"


def _due(district, waiting) -> datetime:
    """When the waiting files are imported, in the page's time zone: a zip at once, loose
    files once the district's quiet period has passed since the last of them."""
    try:
        spec = get_format(district.format, district.slug)
    except ValueError:
        spec = None
    if spec and any(spec.claim(u.filename).package for u in waiting[:50]):
        return timezone.localtime()
    quiet = timedelta(seconds=district.quiet_period_seconds)
    return timezone.localtime(waiting.first().received_at + quiet)


def moved(sync: Sync) -> int:
    return sum(sum(c.get(k, 0) for k in MOVES) for c in (sync.changes or {}).values())


@dataclass
class Bar:
    x: float
    y: float
    height: float
    cx: float
    errors_y: float
    sync: Sync
    size: int
    errors: int
    label: str  # the district's name, written up the bar (its full name in the tooltip)


# Room left of the bars for the records axis, and below them for the dates.
AXIS_WIDTH, DATE_HEIGHT = 58, 16
# A district's name up its bar fits the plot's height at this many characters.
LABEL_LENGTH = 22
MAX_DATES = 8


def _label(name: str) -> str:
    return name if len(name) <= LABEL_LENGTH else name[: LABEL_LENGTH - 1].rstrip() + "…"


def _log_share(value: int, top: int) -> float:
    """A share of the plot's height on a log scale: 1,690 removals and 3 updates both show."""
    return math.log10(1 + value) / math.log10(1 + top)


def chart(syncs: list[Sync], errors: dict[int, int], width: int = 1000, height: int = 160):
    """Bars of records changed per sync (log scale, with its axis), a dot for its error count,
    oldest first, dates along the bottom (in the page's time zone); each bar has its
    district's name written up it, and names the sync in its tooltip."""
    syncs = list(reversed(syncs))
    top = max([moved(s) for s in syncs] + [1])
    top_errors = max(list(errors.values()) + [1])
    plot = width - AXIS_WIDTH
    step = plot / max(len(syncs), 1)
    bar_width = min(max(step - 2, 1), 40)
    ticks = [10**k for k in range(int(math.log10(top)) + 1)]
    days = [f"{timezone.localtime(s.started_at):%b %-d}" for s in syncs]
    # A date under the first bar of each day, at most MAX_DATES of them.
    firsts = [i for i, day in enumerate(days) if i == 0 or day != days[i - 1]]
    picked = firsts[:: math.ceil(len(firsts) / MAX_DATES)] if firsts else []
    return {
        "width": width,
        "height": height,
        "full_height": height + DATE_HEIGHT,
        "left": AXIS_WIDTH,
        "bar_width": bar_width,
        "top": top,
        "top_errors": top_errors,
        "ticks": [(f"{t:,}", height - height * _log_share(t, top)) for t in ticks],
        "dates": [(AXIS_WIDTH + i * step, days[i]) for i in picked],
        "bars": [
            Bar(
                x=AXIS_WIDTH + i * step,
                y=height - height * _log_share(moved(s), top),
                height=height * _log_share(moved(s), top),
                cx=AXIS_WIDTH + i * step + bar_width / 2,
                errors_y=height - height * errors.get(s.pk, 0) / top_errors,
                sync=s,
                size=moved(s),
                errors=errors.get(s.pk, 0),
                label=_label(s.district.name),
            )
            for i, s in enumerate(syncs)
        ],
    }
