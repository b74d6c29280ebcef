"""The declared ranges refuse releases the code breaks on or that are unsafe, the tested
pins in constraints.txt lie inside them, and the consumer install stays light."""

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
CONSUMER = [Requirement(r) for r in PROJECT["dependencies"]]
PIPELINE = [Requirement(r) for r in PROJECT["optional-dependencies"]["pipeline"]]
# One range per package (tensorflow and tensorflow-cpu are two packages, by platform).
REQUIREMENTS = {canonicalize_name(r.name): r for r in CONSUMER + PIPELINE}

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


def test_python_range_is_every_supported_minor_with_no_patch_floor():
    supported = SpecifierSet(PROJECT["requires-python"])
    # Debian 12's own python3.11 is 3.11.2; 3.13 is Debian 13's, Fedora's and Arch's.
    assert all(supported.contains(v) for v in ("3.11.0", "3.11.2", "3.12.0", "3.13.9"))
    assert not any(supported.contains(v) for v in ("3.10.12", "3.14.0"))
    assert supported.contains(sys.version.split()[0])


def test_the_consumer_install_has_no_training_or_orchestration_stack():
    names = {canonicalize_name(r.name) for r in CONSUMER}
    assert "onnxruntime" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "prefect", "great-expectations",
                        "pandas", "scikit-learn", "scipy", "matplotlib", "optuna", "dask"}


def test_tested_pins_lie_inside_the_declared_ranges():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line.split(" #")[0])
            [spec] = pin.specifier
            assert spec.operator == "==", f"{line}: not a pin"
            pins.setdefault(canonicalize_name(pin.name), []).append(Version(spec.version))
    for name, requirement in REQUIREMENTS.items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        for version in pins[name]:
            assert requirement.specifier.contains(version), f"{name}=={version} outside range"
