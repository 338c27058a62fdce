"""The `rosterdrop` console command: Django's management commands under one project name.

`rosterdrop` (or `--help`) lists rosterdrop's own commands first, grouped by the app that owns
them; Django's commands that erase or overwrite data are not offered. A missing database or
data folder, and a closed pipe (`rosterdrop sync list | head`), end in one line, not a traceback.

Convention for a command with actions (`rosterdrop sync list|show|...`): subclass
`ActionCommand`, declare the actions with `self.actions(parser)` and write one `do_<action>`
method each (a dash in the action's name is an underscore in the method's).
"""

import gc
import os
import shutil
import sys
import textwrap
from pathlib import Path

from django.core.management import ManagementUtility, get_commands, load_command_class
from django.core.management.base import BaseCommand

# Headings of the apps' commands in `rosterdrop --help`, in this order; an app not named here
# is listed after them under its own label.
GROUPS = {
    "intake": "Serve and receive",
    "districts": "Districts",
    "ingest": "Imports",
    "custom": "Formats and custom templates",
    "inbox": "Raw uploads",
    "accounts": "Console users and API tokens",
    "notify": "Mail",
    "oneroster": "OneRoster service",
    "feed": "Change feed",
    "backup": "Backup",
}

# Django's commands that erase or overwrite the roster, the audit trail or the login history
# (or start a server that is not rosterdrop's): `rosterdrop flush` is one typo from `rosterdrop
# sync`. Code and tests still reach them through call_command.
WITHHELD = {
    "flush": "erases every table",
    "sqlflush": "prints the SQL that erases every table",
    "loaddata": "overwrites rows with a fixture's",
    "testserver": "starts Django's development server on a throwaway database",
    "runserver": "starts Django's development server, without SFTP, FTPS or the worker",
    "remove_stale_contenttypes": "deletes content types and the rows that refer to them",
    "axes_reset_logs": "deletes the console's login history",
    "axes_reset_failure_logs": "deletes the console's failed-login history",
}


class ActionCommand(BaseCommand):
    """A command of actions: `do_<action>` receives the parsed options as keywords."""

    def actions(self, parser):
        """The subparsers to add one action each to."""
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def handle(self, *args, action: str, **options):
        return getattr(self, "do_" + action.replace("-", "_"))(**options)


class Utility(ManagementUtility):
    """Django's dispatcher with rosterdrop's help and without the withheld commands."""

    def main_help_text(self, commands_only: bool = False) -> str:
        commands = {name: app for name, app in get_commands().items() if name not in WITHHELD}
        if commands_only:
            return "\n".join(sorted(commands))
        ours: dict[str, list[str]] = {}
        theirs = []
        for name, app in sorted(commands.items()):
            if app.startswith("rosterdrop."):
                ours.setdefault(app.removeprefix("rosterdrop."), []).append(name)
            else:
                theirs.append(name)
        order = [*GROUPS, *sorted(set(ours) - set(GROUPS))]
        width = max(len(n) for names in ours.values() for n in names) + 2
        lines = ["Usage: rosterdrop COMMAND [options]   (rosterdrop help COMMAND: its options)"]
        for app in (a for a in order if a in ours):
            lines += ["", GROUPS.get(app, app) + ":"]
            lines += [f"  {n:<{width}}{summary(commands[n], n, 98 - width)}" for n in ours[app]]
        lines += ["", "Django's own (schema, shell, checks):"]
        lines += textwrap.wrap(", ".join(theirs), 98, initial_indent="  ", subsequent_indent="  ")
        return "\n".join(lines)

    def fetch_command(self, subcommand: str) -> BaseCommand:
        if subcommand in WITHHELD:
            sys.stderr.write(
                f"rosterdrop: {subcommand} is not offered (it {WITHHELD[subcommand]}). "
                "Type 'rosterdrop help' for the commands.\n"
            )
            sys.exit(1)
        command = super().fetch_command(subcommand)
        # What start loaded (Django, the apps, the command's modules) lives as long as the
        # process: out of the collector's sight, the final collection at exit no longer walks
        # it (serve's stop took 3.3 s of which 2.5 s that walk, under load), nor do full
        # collections while a serve or an import runs.
        gc.freeze()
        gc.enable()  # off since main: see there
        return command


def summary(app: str, name: str, width: int) -> str:
    """A command's help up to its first full stop, on one line of at most `width`."""
    sentence = load_command_class(app, name).help.split(". ")[0].rstrip(".")
    return textwrap.shorten(sentence, width, placeholder=" ...")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rosterdrop.settings")
    data_dir = Path(os.environ.get("ROSTERDROP_DATA_DIR", "var")).resolve()
    had_data_dir = data_dir.is_dir()
    # No collection while Django and the command's modules load (on again at the freeze in
    # fetch_command): each full one walked every object loaded so far, ~0.1 s of the ~0.9 s
    # of CPU a command's start takes, where what it frees (~2.6k objects) is not worth it.
    gc.disable()
    try:
        Utility(["rosterdrop", *sys.argv[1:]]).execute()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as cat does; the interpreter's own
        # flush at exit must not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        problem = database_problem(exc, data_dir, had_data_dir)
        if problem is None:
            raise
        sys.exit(f"rosterdrop: {problem}")


def database_problem(exc: Exception, data_dir: Path, had_data_dir: bool) -> str | None:
    """One line saying which database or data folder is missing and how to point at it, or
    None when `exc` is not about a missing database."""
    from django.conf import settings
    from django.db import DatabaseError

    if not isinstance(exc, DatabaseError):
        return None
    cause = str(exc.__cause__ or exc)
    url = shown_url(os.environ.get("ROSTERDROP_DATABASE_URL", ""))
    if not had_data_dir:
        forget(data_dir)
    if not url and not had_data_dir:
        return (
            f"no data folder at {data_dir}: run rosterdrop where `rosterdrop serve` keeps its "
            "data, or set ROSTERDROP_DATA_DIR=/path/to/that/folder "
            "(`rosterdrop migrate` makes a new one)"
        )
    where = url or f"{settings.DATABASES['default']['NAME']} (in ROSTERDROP_DATA_DIR={data_dir})"
    if "no such table" in cause or "UndefinedTable" in type(exc.__cause__).__name__:
        return (
            f"the database {where} has no rosterdrop tables: run `rosterdrop migrate`, or point "
            "ROSTERDROP_DATA_DIR (or ROSTERDROP_DATABASE_URL) at the server's"
        )
    if "connect" in cause or "unable to open database" in cause:
        first = cause.strip().splitlines()[0]
        return (
            f"cannot open the database {where} ({first}): check that it runs and exists, or point "
            "ROSTERDROP_DATABASE_URL (or ROSTERDROP_DATA_DIR) at the server's"
        )
    return None


def forget(data_dir: Path) -> None:
    """Remove the data folder this failed command made (settings writes its secret key, SQLite
    an empty file), so the next command does not take it for the server's."""
    made = {"secret_key", "rosterdrop.sqlite3", "rosterdrop.sqlite3-wal", "rosterdrop.sqlite3-shm"}
    if data_dir.is_dir() and {p.name for p in data_dir.iterdir()} <= made:
        shutil.rmtree(data_dir)


def shown_url(url: str) -> str:
    """A database URL without its password."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, user = head.partition("//")
    return f"{scheme}//{user.split(':')[0]}:***@{tail}"
