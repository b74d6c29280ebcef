"""Drift of served traffic (`digits drift`): the images a service logged (digits.monitoring)
against MNIST, with the batch checks' statistics (digits.checks.drift), the answers' digit
shares against MNIST train's class shares, and the answers' top-class confidence against the
answering version's on MNIST test.

numpy here; scikit-learn in `domain_auc`, Keras only when a model gives features, the
model runtime when a version is measured. The flow (flows/drift.py) reads the log, loads
the reference and the models, and publishes what `compare` makes, through
digits.monitoring.traffic_report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from digits.checks import drift
from digits.checks.settings import BatchChecks
from digits.errors import UsageError
from digits.monitoring.verdict import DRIFT, NO_DRIFT, TOO_FEW
from digits.registry.location import AnyRegistry


@dataclass(frozen=True)
class DriftChecks:
    """Bounds of `digits drift` (served traffic against MNIST, `compare`) that
    BatchChecks does not hold: the statistics, domain AUC and class shares reuse its
    max_stat_shift, max_domain_auc, max_class_shift and reference_rows.
    """

    # Fewer logged images say too little: the class shares of 100 random MNIST digits lie
    # ~0.15 from MNIST's (of 20, ~0.45), and the domain classifier needs folds to learn on.
    min_images: int = 100
    # Mean top-class probability of the served answers may sit this far below the answering
    # version's on MNIST test before the traffic counts as drift. Measured with an mlp of
    # 96.8% (0.957 on test), 1,000 images each: MNIST test digits drop 0.001, other writers
    # (rotated, sheared, other pens) 0.04, inverted digits 0.09, noise 0.10. A weak signal
    # alone: the statistics and the domain AUC flag the last two far beyond their bounds.
    max_confidence_drop: float = 0.1
    # Served images the domain classifier sees (a fixed random sample of the window), as many
    # as BatchChecks' reference rows: its cost grows with the rows, its AUC does not.
    sample_rows: int = 2_000

    def __post_init__(self) -> None:
        for name in ("min_images", "sample_rows"):
            if getattr(self, name) < 2:  # two images at least: the classifier's folds
                raise UsageError(f"{name} {getattr(self, name)} must be at least 2")
        if not 0 <= self.max_confidence_drop <= 1:
            raise UsageError(f"max_confidence_drop {self.max_confidence_drop} must lie in 0..1")


@dataclass(frozen=True)
class Row:
    """One compared statistic: the served value, the reference's, the number the bound
    applies to (`gap`), and the verdict."""

    name: str
    served: float | None  # None where a mean means nothing (class shares)
    reference: float | None
    gap: float | None  # None: skipped (`note` says why)
    bound: str
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class TrafficDrift:
    """What `digits drift` decided about the logged answers since `since`."""

    verdict: str  # DRIFT, NO_DRIFT or TOO_FEW
    images: int
    since: datetime
    versions: dict[str, int]  # answering version -> images it answered
    rows: tuple[Row, ...] = ()
    needed: int = 0  # images needed to judge (for TOO_FEW's line)

    @property
    def drifted(self) -> bool:
        return self.verdict == DRIFT

    def line(self) -> str:
        """The command's one line: the verdict, how much traffic, what broke its bound."""
        since = f"{self.since:%Y-%m-%d %H:%M} UTC"
        head = f"{self.verdict}: {self.images} images answered since {since}"
        if self.verdict == TOO_FEW:
            return f"{head}, {self.needed} needed to judge"
        failed = [row for row in self.rows if not row.passed]
        if not failed:
            return f"{head}; all {len(self.rows)} statistics within their bounds"
        return f"{head}; beyond bounds: " + ", ".join(
            f"{row.name} {row.gap:.3g} (bound {row.bound})" for row in failed)

    def payload(self) -> dict:
        """JSON-able numbers for the `digits.serving.drift` event."""
        return {"verdict": self.verdict, "images": self.images,
                "since": self.since.isoformat(), "versions": self.versions,
                "failed": [row.name for row in self.rows if not row.passed],
                "checks": {row.name: {k: v for k, v in asdict(row).items() if k != "name"}
                           for row in self.rows}}


@dataclass(frozen=True)
class Traffic:
    """The per-image numbers compared: served and reference side by side."""

    stats: dict[str, np.ndarray]  # digits.checks.drift.image_stats of the served images
    reference_stats: dict[str, np.ndarray]  # ... of the MNIST train sample
    digits: np.ndarray  # the answers given
    reference_labels: np.ndarray  # MNIST train's labels
    confidence: np.ndarray  # top-class probability of answers by a version in the registry
    reference_confidence: np.ndarray  # the same versions' top-class probability on MNIST test
    reference_weights: np.ndarray  # per reference value: its version's share of the answers


def answers_by_version(versions: np.ndarray) -> dict[str, int]:
    """Answering version -> images it answered, in order of first answer."""
    names, first, counts = np.unique(versions, return_index=True, return_counts=True)
    return {str(names[i]): int(counts[i]) for i in np.argsort(first)}


def confidence_reference(versions: np.ndarray, test_confidence: dict[str, np.ndarray]):
    """MNIST test confidences of the answering versions, each weighted by its share of the
    answers, so their weighted mean is what the served answers' mean should be."""
    known = [v for v in dict.fromkeys(versions.tolist()) if v in test_confidence]
    counts = {v: int(np.count_nonzero(versions == v)) for v in known}
    total = max(sum(counts.values()), 1)
    values = [test_confidence[v] for v in known]
    weights = [np.full(len(test_confidence[v]), counts[v] / total / len(test_confidence[v]))
               for v in known]
    return np.concatenate([np.zeros(0), *values]), np.concatenate([np.zeros(0), *weights])


def traffic_of(images, digits, probabilities, versions, reference_images, reference_labels,
               test_confidence: dict[str, np.ndarray]) -> Traffic:
    """`test_confidence`: version -> its top-class probabilities on MNIST test; answers by
    versions missing from it are left out of the confidence comparison."""
    answered_by_known = np.isin(versions, list(test_confidence))
    values, weights = confidence_reference(versions, test_confidence)
    return Traffic(drift.image_stats(images), drift.image_stats(reference_images), digits,
                   reference_labels, probabilities[answered_by_known].max(axis=1, initial=0),
                   values, weights)


def stat_rows(traffic: Traffic, config: BatchChecks) -> list[Row]:
    """Each statistic of digits.checks.drift.STATS, its gap in reference sds as `stat_shift`
    measures the largest one (the bound is on every one, so the largest decides)."""
    rows = []
    for name in drift.STATS:
        ours, theirs = traffic.stats[name], traffic.reference_stats[name]
        gap = abs(float(ours.mean()) - float(theirs.mean())) / max(float(theirs.std()), 1e-9)
        rows.append(Row(name, float(ours.mean()), float(theirs.mean()), gap,
                        f"<= {config.max_stat_shift:g} sd", gap <= config.max_stat_shift))
    return rows


def auc_row(served_features: np.ndarray, reference_features: np.ndarray, on: str,
            config: BatchChecks) -> Row:
    auc = drift.domain_auc(served_features, reference_features)
    return Row("domain-auc", None, 0.5, auc, f"<= {config.max_domain_auc:g}",
               auc <= config.max_domain_auc,
               f"classifier telling served from MNIST train images on {on}")


def class_row(traffic: Traffic, config: BatchChecks) -> Row:
    shift = drift.class_shift(traffic.digits, traffic.reference_labels)
    return Row("class-shares", None, None, shift, f"<= {config.max_class_shift:g}",
               shift <= config.max_class_shift,
               "total variation distance of the answered digits' shares to MNIST train's")


def confidence_row(traffic: Traffic, config: DriftChecks) -> Row:
    bound = f"drop <= {config.max_confidence_drop:g}"
    if not len(traffic.confidence) or not len(traffic.reference_confidence):
        return Row("confidence", None, None, None, bound, True,
                   "skipped: no answering version is in the registry")
    served = float(traffic.confidence.mean())
    reference = float(np.sum(traffic.reference_confidence * traffic.reference_weights))
    drop = reference - served  # a rise is no sign of trouble
    return Row("confidence", served, reference, drop, bound, drop <= config.max_confidence_drop,
               "mean top-class probability: served answers against the answering "
               "version(s) on MNIST test")


def compare(traffic: Traffic, served_features: np.ndarray, reference_features: np.ndarray,
            features_on: str, batch: BatchChecks, config: DriftChecks, since: datetime,
            versions: dict[str, int]) -> TrafficDrift:
    """Every row, and the verdict: drift when any row breaks its bound."""
    rows = (*stat_rows(traffic, batch),
            auc_row(served_features, reference_features, features_on, batch),
            class_row(traffic, batch), confidence_row(traffic, config))
    verdict = NO_DRIFT if all(row.passed for row in rows) else DRIFT
    return TrafficDrift(verdict, len(traffic.digits), since, versions, rows)


def too_few(images: int, since: datetime, versions: dict[str, int],
            config: DriftChecks) -> TrafficDrift:
    return TrafficDrift(TOO_FEW, images, since, versions, needed=config.min_images)


def sample_rows(n: int, rows: int, seed: int = 0) -> np.ndarray:
    """A fixed random choice of at most `rows` of `n` rows (the domain classifier's cost
    grows with the rows; a week of traffic may hold 100,000)."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:rows])


def version_confidences(registry: AnyRegistry, versions: list[str],
                     test_images: np.ndarray) -> dict[str, np.ndarray]:
    """Version -> its top-class probability on each MNIST test image, for the answering
    versions still in `registry` (verified; ONNX when exported, as the service runs them).
    The manifest does not record it, so it is measured here, the same way for every one."""
    from digits.registry.load import load_predictor

    present = set(registry.names())
    return {version: load_predictor(version, registry).predict(test_images).max(axis=1)
            for version in versions if version in present}


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Features when there is no production model: the pixels, 0..1, mean-pooled 2x2 to
    14x14. The classifier on all 784 pixels took minutes on 2,000 + 2,000 images here; on
    196 a few seconds, and it still tells noise or inverted digits apart (AUC 1.0)."""
    pixels = np.asarray(images, np.float32).reshape(len(images), 14, 2, 14, 2) / 255
    return pixels.mean(axis=(2, 4)).reshape(len(images), -1)


def features_of(model) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The feature function the domain classifier uses, and what it is on: the model's
    penultimate layer (as the batch checks use), else pixels."""
    if model is None:
        return pixel_features, "14x14 pooled pixels (no production model)"
    penultimate = drift.penultimate_features(model)
    return (lambda images: penultimate(images)[0]), "the production model's penultimate features"
