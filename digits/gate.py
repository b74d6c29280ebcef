"""Gate: the rule that decides whether a trained model may replace production.

The rule is a pure function of the challenger's accuracy and production's manifest; the
registry applies it under its write lock (`Registry.promote_if`), so the production it
compares with is the one it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from digits.config import DEFAULT_THRESHOLD
from digits.errors import RegistryError, UsageError


@dataclass(frozen=True)
class Decision:
    promote: bool
    accuracy: float
    threshold: float
    production_version: str | None  # the champion compared with, when the check is on
    production_accuracy: float | None
    regression_tolerance: float | None  # None: champion/challenger check off
    reason: str


@dataclass(frozen=True)
class GateRule:
    """Promote at or above `threshold` and not worse than production beyond `tolerance`."""

    accuracy: float
    threshold: float = DEFAULT_THRESHOLD
    regression_tolerance: float | None = None

    def __call__(self, production: dict | None) -> Decision:
        """Decide against production's manifest (None before the first promotion)."""
        version, champion = None, None
        if production is not None and self.regression_tolerance is not None:
            version, champion = production["version"], accuracy_of(production)
        return decide(self.accuracy, self.threshold, champion, self.regression_tolerance, version)


def check_threshold(threshold: float) -> float:
    """The gate may be made stricter than the default, never weaker."""
    if not DEFAULT_THRESHOLD <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold} must be between {DEFAULT_THRESHOLD} and 1.0")
    return threshold


def accuracy_of(manifest: dict) -> float:
    accuracy = (manifest.get("metrics") or {}).get("accuracy")
    if not isinstance(accuracy, (int, float)):
        raise RegistryError(f"production {manifest.get('version')}: manifest has no accuracy")
    return float(accuracy)


def decide(
    accuracy: float,
    threshold: float,
    production_accuracy: float | None = None,
    regression_tolerance: float | None = None,
    production_version: str | None = None,
) -> Decision:
    """Promote only at or above the threshold and not worse than production beyond tolerance.

    The reason names everything compared, so a log line or state message stands alone.
    """
    champion = production_accuracy if regression_tolerance is not None else None
    floor = None if champion is None else champion - regression_tolerance
    against = (
        f"production {production_version or '?'} ({champion:.4f}) - tolerance "
        f"{regression_tolerance}" if champion is not None else ""
    )
    if accuracy < threshold:
        promote, reason = False, f"accuracy {accuracy:.4f} < threshold {threshold}"
    elif floor is not None and accuracy < floor:
        promote, reason = False, f"accuracy {accuracy:.4f} < {against}"
    else:
        promote, reason = True, f"accuracy {accuracy:.4f} >= threshold {threshold}"
        if champion is not None:
            reason += f" and >= {against}"
        elif regression_tolerance is None:
            reason += "; production comparison off"
        else:
            reason += "; no production model yet"
    return Decision(
        promote=promote,
        accuracy=accuracy,
        threshold=threshold,
        production_version=production_version if champion is not None else None,
        production_accuracy=champion,
        regression_tolerance=regression_tolerance,
        reason=reason,
    )
