"""Gate: decide whether a trained model may replace production, and promote it if so."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from tasks.config import DEFAULT_THRESHOLD, PRODUCTION_ALIAS
from tasks.errors import UsageError
from tasks.registry import Registry


@dataclass(frozen=True)
class Decision:
    promote: bool
    accuracy: float
    threshold: float
    production_accuracy: float | None  # the champion's, when there is one and the check is on
    regression_tolerance: float | None  # None: champion/challenger check off
    reason: str


def check_threshold(threshold: float) -> float:
    """The gate may be made stricter than the default, never weaker."""
    if not DEFAULT_THRESHOLD <= threshold <= 1.0:
        raise UsageError(
            f"--threshold {threshold} must be between {DEFAULT_THRESHOLD} and 1.0"
        )
    return threshold


def decide(
    accuracy: float,
    threshold: float,
    production_accuracy: float | None = None,
    regression_tolerance: float | None = None,
) -> Decision:
    """Promote only at or above the threshold and not worse than production beyond tolerance."""
    champion = production_accuracy if regression_tolerance is not None else None
    if accuracy < threshold:
        reason = f"accuracy {accuracy:.4f} < {threshold}"
    elif champion is not None and accuracy < champion - regression_tolerance:
        reason = (
            f"accuracy {accuracy:.4f} < production {champion:.4f} "
            f"- tolerance {regression_tolerance}"
        )
    else:
        reason = ""
    return Decision(
        promote=not reason,
        accuracy=accuracy,
        threshold=threshold,
        production_accuracy=champion,
        regression_tolerance=regression_tolerance,
        reason=reason or f"accuracy {accuracy:.4f} >= {threshold}",
    )


def environment() -> dict[str, str]:
    """Versions that decide whether a model loads and behaves the same elsewhere."""
    versions = {"python": platform.python_version()}
    for name in ("keras", "tensorflow-cpu", "tensorflow", "prefect", "great-expectations"):
        try:
            versions[name] = package_version(name)
        except ModuleNotFoundError:
            continue
    return versions


@task(name="gate", task_run_name="gate", cache_policy=NONE, persist_result=False)
def gate(
    accuracy: float, threshold: float, registry: Path, regression_tolerance: float | None
) -> Decision:
    production = Registry(registry).production_accuracy()
    decision = decide(accuracy, threshold, production, regression_tolerance)
    get_run_logger().info(
        "%s: %s", "promote" if decision.promote else "reject", decision.reason
    )
    return decision


@task(name="promote", task_run_name="promote", cache_policy=NONE, persist_result=False)
def promote(registry: Path, build_dir: Path, manifest: dict, decision: Decision) -> str:
    """The only task that writes to the registry; it publishes a complete, checksummed version."""
    manifest = {**manifest, "gate": asdict(decision), "environment": environment()}
    version = Registry(registry).publish(build_dir, manifest, alias=PRODUCTION_ALIAS)
    get_run_logger().info("published %s as %s in %s", version, PRODUCTION_ALIAS, registry)
    return version
