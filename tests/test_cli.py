"""The real `rosterdrop` command in a subprocess: its help, the commands it withholds, one-line
errors for a missing database or data folder, and a quiet exit on a closed pipe."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROSTERDROP = str(Path(sys.executable).with_name("rosterdrop"))
SLUG = "a-district-with-the-longest-slug-a-slug-field-takes"[:50]


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROSTERDROP_")}
    return {**env, "ROSTERDROP_DATA_DIR": str(data_dir), **extra}


def run(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ROSTERDROP, *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, migrated_data) -> Path:
    """A migrated data folder with one district and 1,500 syncs: their list is more than the
    64 KiB a pipe holds, so the writer is still writing when the reader goes."""
    data = tmp_path_factory.mktemp("cli") / "data"
    shutil.copytree(migrated_data, data)
    env = env_for(data)
    setup = (
        f"SLUG = {SLUG!r}\n"
        "from rosterdrop.districts.models import District\n"
        "from rosterdrop.ingest.models import Sync\n"
        "d = District.objects.create(slug=SLUG, name='CLI', format='oneroster-1.1')\n"
        "Sync.objects.bulk_create(Sync(district=d, status='applied') for _ in range(1500))\n"
    )
    assert run(env, "shell", "-c", setup).returncode == 0
    return data


def test_serve_and_the_workers_start_without_the_import_pipeline(tmp_path):
    """`serve` (web, SFTP, FTPS, the worker thread), `rosterdrop worker` and the SFTP worker
    processes load the pipeline (polars, Arrow, the stores) at their first import, not at start:
    ~0.6 s of CPU of each start, which the suite's ~150 serves and every SFTP worker process
    that never imports paid."""
    code = (
        "import sys\n"
        "from rosterdrop.intake import ftps, sftp_workers\n"
        "from rosterdrop.intake.management.commands import serve, worker\n"
        "heavy = ('polars', 'pyarrow', 'numpy', 'adbc_driver_sqlite', 'rosterdrop.ingest.syncs')\n"
        "print('loaded:', [name for name in heavy if name in sys.modules])\n"
    )
    result = run(env_for(tmp_path), "shell", "--no-imports", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded: []"


@pytest.mark.parametrize("args", [(), ("--help",), ("help",)])
def test_help_lists_rosterdrop_commands_first_grouped_one_line_each(tmp_path, args):
    result = run(env_for(tmp_path), *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    django = lines.index("Django's own (schema, shell, checks):")
    ours = lines[:django]
    assert "Imports:" in ours and "Serve and receive:" in ours
    for command in ("serve", "sync", "import", "validate", "template", "sftp-user", "district"):
        [line] = [line for line in ours if line.split()[:1] == [command]]
        assert len(line.split()) > 2, line  # with its one-line summary
    assert "migrate," in " ".join(lines[django:]).split()  # Django's own come after
    assert max(map(len, lines)) <= 100
    for withheld in ("flush", "sqlflush", "testserver", "loaddata", "runserver"):
        assert withheld not in result.stdout.replace(",", " ").split()


@pytest.mark.slow
def test_destructive_django_commands_are_not_offered(migrated):
    env = env_for(migrated)
    result = run(env, "flush", "--noinput")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "rosterdrop: flush is not offered (it erases every table). "
        "Type 'rosterdrop help' for the commands."
    ]
    assert run(env, "district", "list").stdout.startswith(SLUG)  # nothing was erased
    assert "flush" not in run(env, "help", "--commands").stdout.split()


def test_a_missing_data_folder_is_one_line_and_is_not_created(tmp_path):
    missing = tmp_path / "nowhere"
    result = run(env_for(missing), "sync", "list")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"rosterdrop: no data folder at {missing}: ")
    assert "ROSTERDROP_DATA_DIR=" in line
    assert not missing.exists()


def test_a_data_folder_without_a_database_is_one_line(tmp_path):
    result = run(env_for(tmp_path), "district", "list")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert f"the database {tmp_path}/rosterdrop.sqlite3" in line
    assert "has no rosterdrop tables: run `rosterdrop migrate`" in line


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path):
    url = "postgresql://someone:s3cret@127.0.0.1:1/rosterdrop"
    result = run(env_for(tmp_path, ROSTERDROP_DATABASE_URL=url), "sync", "list")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot open the database postgresql://someone:***@127.0.0.1:1/rosterdrop" in line
    assert "ROSTERDROP_DATABASE_URL" in line and "s3cret" not in line


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(migrated):
    reader = subprocess.Popen(
        [ROSTERDROP, "sync", "list"],
        env=env_for(migrated),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout.readline() == f"1500\t{SLUG}\tapplied\t\n"
    reader.stdout.close()  # as `| head -1` does
    stderr = reader.stderr.read()
    assert reader.wait(timeout=60) == 1
    assert stderr == ""


def test_every_command_with_actions_follows_one_convention():
    """A command with actions is an ActionCommand with a `do_<action>` method for each."""
    from django.core.management import get_commands, load_command_class

    from rosterdrop.cli import ActionCommand

    with_actions = []
    for name, app in get_commands().items():
        if not app.startswith("rosterdrop."):
            continue
        command = load_command_class(app, name)
        parser = command.create_parser("rosterdrop", name)
        if parser._subparsers is None:
            continue
        with_actions.append(name)
        assert isinstance(command, ActionCommand), name
        [actions] = parser._subparsers._group_actions
        for action in actions.choices:
            assert callable(getattr(command, "do_" + action.replace("-", "_"), None)), action
    assert {"sync", "template", "sftp-user", "user", "token", "district"} <= set(with_actions)


def test_an_import_over_the_quota_is_one_line_and_keeps_nothing(migrated, tmp_path):
    """`rosterdrop import` holds the district's quota as SFTP and the web page do."""
    env = env_for(migrated)
    added = run(env, "district", "add", "tight", "--name", "Tight", "--format", "oneroster-1.1",
                "--upload-quota-bytes", "100")  # fmt: skip
    assert added.returncode == 0, added.stderr
    sent = tmp_path / "users.csv"
    sent.write_text("sourcedId,givenName\n" + "u,Ann\n" * 50)
    done = run(env, "import", str(sent), "--district", "tight")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"Importing {sent} for tight...",
        "CommandError: Storage quota exceeded: the district may keep 100 bytes of uploads and "
        "this file does not fit; nothing was kept",
    ]
    listed = run(env, "shell", "--no-imports", "-c",
                 "from rosterdrop.inbox.models import Upload;"
                 "print(Upload.objects.filter(district__slug='tight').count())")  # fmt: skip
    assert listed.stdout.strip() == "0"
    assert not (migrated / "inbox" / "tight").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("export", "nosuch", "--output", "out.zip"),
        ("oneroster-client", "add", "App", "--district", "nosuch"),
        ("webhook", "add", "nosuch", "http://127.0.0.1:9/"),
        ("user", "add", "someone@district.test", "--district", "nosuch"),
        ("sftp-user", "add", "someone", "--district", "nosuch", "--no-password"),
        ("template", "list", "--district", "nosuch"),
        ("import", ".", "--district", "nosuch"),
        ("validate", ".", "--district", "nosuch"),
    ],
    ids=lambda args: args[0],
)
def test_an_unknown_district_is_one_line_that_says_where_to_look(migrated, tmp_path, args):
    """Every command that takes a district's slug looks it up alike (district_named)."""
    result = run(env_for(migrated), *args, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.endswith("no district 'nosuch'; `rosterdrop district list` shows them"), line
    assert not list(tmp_path.iterdir())


def test_a_command_loads_only_what_it_uses(tmp_path):
    """The suite and its users start the command hundreds of times: Django's start imports no
    pipeline, Arrow, polars, job queue or SSH library (an import or a serve loads them when it
    runs), and Arrow, loaded later, still uses the system allocator (ingest/apps.py)."""
    heavy = ["pyarrow", "polars", "procrastinate", "asyncssh", "rosterdrop.ingest.engine"]
    code = (
        "import sys, django\n"
        "django.setup()\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
        "import pyarrow\n"
        "print(pyarrow.default_memory_pool().backend_name)\n"
    )
    env = env_for(tmp_path, DJANGO_SETTINGS_MODULE="rosterdrop.settings")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.splitlines() == ["[]", "system"], done.stderr


def test_a_process_s_threads_allocate_from_one_heap(tmp_path):
    """glibc's malloc gives each thread a heap of its own unless told otherwise: the read-ahead
    thread's heap kept 200-300 MB free but resident at the 1% change's memory peak at `huge`
    (ingest/memory.py). Every process that sets Django up keeps one (ingest/apps.py): a thread
    started after it allocates from the main heap, which malloc_info lists alone."""
    report = tmp_path / "malloc.xml"
    code = (
        "import ctypes, threading, django\n"
        "django.setup()\n"
        "thread = threading.Thread(target=lambda: bytearray(1 << 20))\n"
        "thread.start()\n"
        "thread.join()\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.fopen.restype = ctypes.c_void_p\n"
        f"out = libc.fopen({str(report).encode()!r}, b'w')\n"
        "libc.malloc_info(0, ctypes.c_void_p(out))\n"
        "libc.fclose(ctypes.c_void_p(out))\n"
    )
    env = env_for(tmp_path, DJANGO_SETTINGS_MODULE="rosterdrop.settings")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert report.read_text().count("<heap nr=") == 1, report.read_text()


def test_what_a_command_loaded_at_start_is_frozen_out_of_the_collector(migrated):
    """cli.Utility.fetch_command: the final collection at exit does not walk what start loaded
    (a serve stopped in 0.8-1.2 s instead of 3-4 s under load; every test stops many)."""
    done = run(env_for(migrated), "shell", "-c", "import gc; print(gc.get_freeze_count())")
    assert int(done.stdout.split()[-1]) > 50_000, done.stdout + done.stderr


def test_start_runs_no_collection_and_the_command_runs_with_the_collector(migrated):
    """cli.main: the collector is off while Django and the command's modules load (its full
    collections walked every module object loaded so far: ~0.1 s of CPU of a ~0.9 s start),
    and on again, past the freeze, for the command itself."""
    code = "import gc; print(gc.isenabled(), gc.get_stats()[2]['collections'])"
    done = run(env_for(migrated), "shell", "-c", code)
    assert done.stdout.split()[-2:] == ["True", "0"], done.stdout + done.stderr
