"""`rosterdrop search-index build`: the SIS search index of the syncs that want one, now.

`serve` and `rosterdrop worker` build it after each sync, in the background, with the lines its
read did not keep (ingest/line_builds.py); `rosterdrop import` does not wait for them
(ingest/index_builds.py). This builds what is left in this process: after a one-shot import
with no server running, or to time the build on its own (bench/run.py), each part's seconds said.
"""

import time
from collections import Counter

from rosterdrop import timing
from rosterdrop.cli import ActionCommand
from rosterdrop.districts.management.arguments import district_named
from rosterdrop.ingest import index_builds


class Command(ActionCommand):
    help = (
        "SIS search index: build it now for the syncs that want one (serve and rosterdrop "
        "worker build it after each import; rosterdrop import does not)."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        sub = self.actions(parser)
        build = sub.add_parser(
            "build", help="Build the index of every sync that wants one, newest first."
        )
        build.add_argument("--district", help="Only this district's syncs.")

    def do_build(self, district: str | None = None, **_):
        account = district_named(district) if district else None
        parts: Counter[str] = Counter()
        timing.listen(lambda label, seconds, batch: parts.update({label: seconds}))
        started = time.perf_counter()
        built = index_builds.build(account)
        left = index_builds.wanted(account).count()
        took = ", ".join(
            f"{parts[part]:.1f} s {part}" for part in ("checkpoint", "kept lines", "search index")
        )
        self.stdout.write(
            f"search index built for {len(built)} sync(s){f' {built}' if built else ''} in "
            f"{time.perf_counter() - started:.1f} s ({took})"
            + (f"; {left} left to another process building them now" if left else "")
        )
