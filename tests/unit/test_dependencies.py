"""The declared ranges refuse releases the code breaks on or that are unsafe, and the
tested pins in constraints.txt lie inside them."""

import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = {
    canonicalize_name(Requirement(r).name): Requirement(r) for r in PROJECT["dependencies"]
}

# The last release each range must refuse, and why.
REFUSE = {
    "keras": ("3.13.2", "safe_mode bypass CVE-2026-1462, fixed in 3.14.0"),
    "typer": ("0.27.1", "no typer.exceptions.TyperException before 0.27.2"),
    "pillow": ("10.0.1", "no Image.has_transparency_data before 10.1.0"),
}


@pytest.mark.parametrize("name", sorted(REFUSE))
def test_range_refuses_broken_or_unsafe_releases(name):
    release, why = REFUSE[name]
    assert not REQUIREMENTS[name].specifier.contains(release), why


def test_python_range_requires_tarfile_extraction_filters():
    # tarfile's filter="data" (used to unpack the npm package) arrived in 3.11.4.
    assert not SpecifierSet(PROJECT["requires-python"]).contains("3.11.3")
    assert SpecifierSet(PROJECT["requires-python"]).contains(sys.version.split()[0])


def test_tested_pins_lie_inside_the_declared_ranges():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[canonicalize_name(name)] = Version(version)
    for name, requirement in REQUIREMENTS.items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} outside range"
