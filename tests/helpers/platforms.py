"""The platform matrix of the README, and pip's binary-only dry run for a platform this
machine is not.

pip's `--platform`/`--python-version` pick wheels for the target, but pip evaluates
environment markers for the interpreter that runs it (Linux x86_64 here). So our own markers
(pyproject.toml's requirements, constraints.txt's per-platform pins) are evaluated for the
target first, with `packaging`, and pip gets plain lines; the markers inside dependencies'
own metadata are still evaluated by pip for this machine, a limit this check shares with pip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYTHONS = ("3.11", "3.12", "3.13")
# pip does not widen a manylinux_2_X tag to the older glibc versions it implies (it does for
# macOS), so a Linux target lists them all, with the legacy names (libclang's wheels are
# manylinux2010 only). Up to glibc 2.28 (Debian 10, RHEL 8), the oldest the README promises:
# a newer glibc takes every one of these wheels too.
GLIBC = range(5, 29)
LEGACY = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}


@dataclass(frozen=True)
class Platform:
    name: str
    sys_platform: str
    machine: str  # platform.machine() there
    tags: tuple[str, ...]  # pip --platform values
    pipeline: bool  # the pipeline extra resolves (TensorFlow publishes wheels for it)

    def environment(self, python: str) -> dict[str, str]:
        """What packaging's markers see on this platform under CPython `python`."""
        return {
            "sys_platform": self.sys_platform,
            "platform_machine": self.machine,
            "platform_system": {"linux": "Linux", "darwin": "Darwin"}[self.sys_platform],
            "os_name": "posix",
            "python_version": python,
            "python_full_version": f"{python}.0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_version": "",
            "implementation_version": f"{python}.0",
        }


def manylinux(machine: str) -> tuple[str, ...]:
    tags = [f"manylinux_2_{minor}_{machine}" for minor in reversed(GLIBC)]
    return tuple(tags + [f"{name}_{machine}" for name in LEGACY.values()])


PLATFORMS = (
    Platform("linux-x86_64", "linux", "x86_64", manylinux("x86_64"), pipeline=True),
    Platform("linux-aarch64", "linux", "aarch64", manylinux("aarch64"), pipeline=True),
    Platform("macos-arm64", "darwin", "arm64", ("macosx_14_0_arm64",), pipeline=True),
    # TensorFlow's last Intel-Mac wheels are 2.16: only the consumer install there.
    Platform("macos-x86_64", "darwin", "x86_64", ("macosx_13_0_x86_64",), pipeline=False),
)


def requirements(extras: tuple[str, ...], env: dict[str, str]) -> list[str]:
    """pyproject.toml's requirements (with `extras`) that apply under `env`, markers gone."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [plain(line) for line in lines if applies(line, env)]


def constraints(env: dict[str, str]) -> list[str]:
    """constraints.txt's pins that apply under `env`, markers gone."""
    lines = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text()
             .splitlines()]
    return [plain(line) for line in lines if line and applies(line, env)]


def applies(line: str, env: dict[str, str]) -> bool:
    marker = Requirement(line).marker
    return marker is None or marker.evaluate(env | {"extra": ""})


def plain(line: str) -> str:
    requirement = Requirement(line)
    requirement.marker = None
    return str(requirement)


def pins(env: dict[str, str]) -> dict[str, str]:
    """Canonical name -> pinned version, under `env`."""
    found = {}
    for line in constraints(env):
        requirement = Requirement(line)
        [spec] = requirement.specifier
        found[canonicalize_name(requirement.name)] = spec.version
    return found


def resolve(platform: Platform, python: str, extras: tuple[str, ...], workdir: Path) -> dict:
    """pip's report of what `pip install '.[extras]' -c constraints.txt` would install on
    `platform` under CPython `python`, wheels only; raises AssertionError with pip's words
    when it does not resolve."""
    env = platform.environment(python)
    workdir.mkdir(parents=True, exist_ok=True)
    wanted, pinned = workdir / "requirements.txt", workdir / "constraints.txt"
    wanted.write_text("\n".join(requirements(extras, env)) + "\n")
    pinned.write_text("\n".join(constraints(env)) + "\n")
    report = workdir / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--quiet", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python, "--report", str(report),
               "-r", str(wanted), "-c", str(pinned)]
    for tag in platform.tags:
        command += ["--platform", tag]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    # pip's words on the conflict, without the warnings about absent local index folders
    errors = [line for line in done.stderr.splitlines() if "is ignored" not in line]
    assert done.returncode == 0, f"{platform.name} {python}: " + "\n".join(errors[-15:])
    return json.loads(report.read_text())
