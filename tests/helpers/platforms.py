"""The platform matrix of the README, and a binary-only resolution for a platform this
machine is not, by uv (`uv pip compile --python-platform`).

uv rather than pip's `install --dry-run --platform`: with every package pinned both pick the
same set (seen here: 186 of 186 for Linux aarch64 under 3.12), but pip evaluates the markers
inside dependencies' metadata for the interpreter that runs it (Linux x86_64 here), and uv
for the target; and pip parses the index's ~150,000 file links again for each target (12
CPU-seconds each, 13 targets), uv reads them once into its cache (about 1 CPU-second each).
Our own markers (pyproject.toml's requirements, constraints.txt's per-platform pins) are
evaluated for the target with `packaging` as well, to know what each target must pin.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

REPO = Path(__file__).resolve().parents[2]
PYTHONS = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Platform:
    name: str
    sys_platform: str
    machine: str  # platform.machine() there
    target: str  # uv's --python-platform: manylinux_2_28 takes every older glibc's wheels
    macos: str | None  # the oldest macOS the README promises (MACOSX_DEPLOYMENT_TARGET)
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


# Linux up to glibc 2.28 (Debian 10, RHEL 8), the oldest the README promises: a newer glibc
# takes every one of these wheels too.
PLATFORMS = (
    Platform("linux-x86_64", "linux", "x86_64", "x86_64-manylinux_2_28", None, pipeline=True),
    Platform("linux-aarch64", "linux", "aarch64", "aarch64-manylinux_2_28", None,
             pipeline=True),
    Platform("macos-arm64", "darwin", "arm64", "aarch64-apple-darwin", "14.0", pipeline=True),
    # TensorFlow's last Intel-Mac wheels are 2.16: only the consumer install there.
    Platform("macos-x86_64", "darwin", "x86_64", "x86_64-apple-darwin", "13.0",
             pipeline=False),
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


def write_inputs(platform: Platform, python: str, extras: tuple[str, ...], workdir: Path
                 ) -> tuple[Path, Path]:
    """What `pip install '.[extras]' -c constraints.txt` asks for on `platform` under
    CPython `python`, as uv's requirements and constraints files. Not from several threads
    at once: packaging parses markers with `ast`, whose compile is not thread-safe on 3.11
    ("AST constructor recursion depth mismatch", seen in a .ci/run)."""
    env = platform.environment(python)
    workdir.mkdir(parents=True, exist_ok=True)
    wanted, pinned = workdir / "requirements.txt", workdir / "constraints.txt"
    wanted.write_text("\n".join(requirements(extras, env)) + "\n")
    pinned.write_text("\n".join(constraints(env)) + "\n")
    return wanted, pinned


def resolve(platform: Platform, python: str, inputs: tuple[Path, Path]) -> dict[str, str]:
    """Canonical name -> version of what `inputs` (write_inputs') install on `platform`
    under CPython `python`, wheels only; raises AssertionError with uv's words when it
    does not resolve. Only a uv process: safe to run several at once."""
    wanted, pinned = inputs
    command = [find_uv_bin(), "pip", "compile", str(wanted), "-c", str(pinned),
               "--python-platform", platform.target, "--python-version", python,
               "--only-binary", ":all:", "--no-header", "--no-annotate", "--quiet"]
    target = {"MACOSX_DEPLOYMENT_TARGET": platform.macos} if platform.macos else {}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env=os.environ | target)
    assert done.returncode == 0, f"{platform.name} {python}: {done.stderr.strip()[-3000:]}"
    lines = [line.split("==") for line in done.stdout.splitlines() if "==" in line]
    return {canonicalize_name(name): version.strip() for name, version in lines}
