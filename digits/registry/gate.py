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
    new_data_accuracy: float | None = None  # on the batches' pooled held-out images
    production_new_data_accuracy: float | None = None  # production re-scored on the same
    ece: float | None = None  # recorded beside the accuracy; no part of the decision yet


@dataclass(frozen=True)
class GateRule:
    """Promote at or above `threshold` and not worse than production beyond `tolerance`."""

    accuracy: float
    threshold: float = DEFAULT_THRESHOLD
    regression_tolerance: float | None = None
    # New data (held-out batch images): the challenger's accuracy, and production's as
    # re-scored in this run, with the version re-scored (None: there was no production).
    new_data_accuracy: float | None = None
    rescored_version: str | None = None
    rescored_accuracy: float | None = None
    ece: float | None = None  # recorded in the decision, not judged

    def __call__(self, production: dict | None) -> Decision:
        """Decide against production's manifest (None before the first promotion)."""
        version, champion, new_champion = None, None, None
        if production is not None and self.regression_tolerance is not None:
            version, champion = production["version"], accuracy_of(production)
            if self.new_data_accuracy is not None:
                if version != self.rescored_version:
                    # The held-out numbers belong to another model: never compare unlike ones.
                    return self.reject(
                        f"production changed during the run "
                        f"({self.rescored_version or 'none'} -> {version}); rerun"
                    )
                new_champion = self.rescored_accuracy
        return decide(
            self.accuracy,
            self.threshold,
            champion,
            self.regression_tolerance,
            version,
            self.new_data_accuracy,
            new_champion,
            ece=self.ece,
        )

    def reject(self, reason: str) -> Decision:
        return Decision(
            promote=False,
            accuracy=self.accuracy,
            threshold=self.threshold,
            production_version=None,
            production_accuracy=None,
            regression_tolerance=self.regression_tolerance,
            reason=reason,
            new_data_accuracy=self.new_data_accuracy,
            ece=self.ece,
        )


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
    new_data_accuracy: float | None = None,
    production_new_data_accuracy: float | None = None,
    ece: float | None = None,
) -> Decision:
    """Promote only at or above the threshold and not worse than production beyond tolerance,
    on MNIST test and, when there is new data, on the batches' held-out images too.

    The reason names everything compared, so a log line or state message stands alone.
    """
    champion = production_accuracy if regression_tolerance is not None else None
    floor = None if champion is None else champion - regression_tolerance
    new_champion = production_new_data_accuracy if champion is not None else None

    def against(production: float) -> str:
        version = production_version or "?"
        return f"production {version} ({production:.4f}) - tolerance {regression_tolerance}"

    new_worse = (
        new_champion is not None
        and new_data_accuracy is not None
        and new_data_accuracy < new_champion - regression_tolerance
    )
    if accuracy < threshold:
        promote, reason = False, f"accuracy {accuracy:.4f} < threshold {threshold}"
    elif floor is not None and accuracy < floor:
        promote, reason = False, f"accuracy {accuracy:.4f} < {against(champion)}"
    elif new_worse:
        new = f"new-data accuracy {new_data_accuracy:.4f}"
        promote, reason = False, f"{new} < {against(new_champion)}"
    else:
        promote, reason = True, f"accuracy {accuracy:.4f} >= threshold {threshold}"
        if champion is not None:
            reason += f" and >= {against(champion)}"
            if new_champion is not None and new_data_accuracy is not None:
                reason += f"; new-data accuracy {new_data_accuracy:.4f} >= {against(new_champion)}"
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
        new_data_accuracy=new_data_accuracy,
        production_new_data_accuracy=new_champion,
        ece=ece,
    )
