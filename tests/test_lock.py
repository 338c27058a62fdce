"""The lock files that scripts/serve and scripts/test install from hold every dependency that
pyproject.toml lists, at a version its range allows (scripts/lock rewrites them)."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: str) -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in PIN.findall((ROOT / lock).read_text())}


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements.lock", PROJECT["dependencies"]),
        ("requirements-test.lock", PROJECT["dependencies"]),
        ("requirements-test.lock", PROJECT["optional-dependencies"]["test"]),
    ],
)
def test_the_lock_pins_every_dependency_of_pyproject_in_its_range(lock, requirements):
    pinned = pins(lock)
    wrong = []
    for requirement in map(Requirement, requirements):
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement} (locked: {version or 'absent'})")
    assert not wrong, f"{lock} disagrees with pyproject.toml, run scripts/lock: {wrong}"


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-test.lock"])
def test_every_pin_carries_its_hashes(lock):
    entries = re.split(r"\n(?=\S)", (ROOT / lock).read_text())
    pinned = [e for e in entries if PIN.match(e)]
    assert pinned and all("--hash=sha256:" in e for e in pinned)
