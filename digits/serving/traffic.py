"""Drift of served traffic (`digits drift`): the images a service logged (digits.data.predictions)
against MNIST, with the batch checks' statistics (digits.checks.drift), the answers' digit
shares against MNIST train's class shares, and the answers' top-class confidence against the
answering version's on MNIST test.

numpy and matplotlib here; scikit-learn in `domain_auc`, Keras only when a model gives
features. The flow (flows/drift.py) reads the log, loads the reference and the models, and
publishes what `compare` and `plot_traffic` make.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
from matplotlib.figure import Figure

from digits.checks import drift
from digits.checks.charts import UNITS, bin_edges  # the batch page's bins and axis names
from digits.checks.settings import BatchChecks
from digits.config import DIGITS, DriftChecks
from digits.registry.store import Registry
from digits.registry.versions import version_names

DRIFT, NO_DRIFT, TOO_FEW = "drift", "no drift", "not enough traffic"
PLOT_DPI = 80  # small PNGs: embedded base64 in the artifact, as the evaluation's plots are


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


def version_confidences(registry: Registry, versions: list[str],
                     test_images: np.ndarray) -> dict[str, np.ndarray]:
    """Version -> its top-class probability on each MNIST test image, for the answering
    versions still in `registry` (verified; ONNX when exported, as the service runs them).
    The manifest does not record it, so it is measured here, the same way for every one."""
    from digits.serving.predictor import load_predictor

    present = set(version_names(registry.root))
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


# --- The report --------------------------------------------------------------------


def plot_traffic(traffic: Traffic) -> bytes:
    """Histograms of each statistic, the answered digits' shares and the confidence, served
    against the reference overlaid, as one PNG."""
    fig = Figure(figsize=(13, 6))
    axes = fig.subplots(2, 4).ravel()
    for ax, name in zip(axes, drift.STATS):
        ours, theirs = traffic.stats[name], traffic.reference_stats[name]
        overlay(ax, ours, theirs, name, "MNIST train",
                bins=bin_edges(name, np.concatenate([ours, theirs])))
        ax.set(xlabel=UNITS[name])
    shares = axes[len(drift.STATS)]
    shares.bar(np.array(DIGITS) - 0.2, drift.class_shares(traffic.digits), 0.4, label="served")
    shares.bar(np.array(DIGITS) + 0.2, drift.class_shares(traffic.reference_labels), 0.4,
               label="MNIST train", alpha=0.6)
    shares.set(title="digit shares (answers)", xticks=DIGITS)
    shares.legend(fontsize=7)
    overlay(axes[len(drift.STATS) + 1], traffic.confidence, traffic.reference_confidence,
            "top-class confidence", "MNIST test", traffic.reference_weights,
            bins=np.linspace(0, 1, 26))
    axes[-1].axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    return buffer.getvalue()


def overlay(ax, served: np.ndarray, reference: np.ndarray, title: str, reference_name: str,
            reference_weights: np.ndarray | None = None, bins=None) -> None:
    """Both as densities on the same bins: the served filled, the reference as a line."""
    if not len(served) or not len(reference):
        ax.text(0.5, 0.5, "nothing to compare", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=title)
        return
    ax.hist(served, bins=bins, density=True, alpha=0.5, label="served")
    ax.hist(reference, bins=bins, density=True, weights=reference_weights, histtype="step",
            linewidth=1.5, color="black", label=reference_name)
    ax.set(title=title)
    ax.legend(fontsize=7)


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def render_markdown(report: TrafficDrift, log_dir: str, png: bytes | None) -> str:
    """The artifact: the verdict line, the table and the histograms (inlined as a data URI:
    the Prefect UI shows markdown images as plain <img src>)."""
    versions = ", ".join(f"{v} ({n})" for v, n in report.versions.items()) or "none"
    lines = [f"# Served traffic: {report.verdict}", "", f"**{report.line()}**", "",
             f"Log `{log_dir}`; answers by {versions}.", ""]
    if report.rows:
        lines += ["| statistic | served | reference | gap | bound | verdict | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {row.name} | {number(row.served)} | {number(row.reference)} | "
                  f"{number(row.gap)} | {row.bound} | {'pass' if row.passed else 'DRIFT'} | "
                  f"{row.note} |" for row in report.rows]
        lines.append("")
    if png is not None:
        encoded = base64.b64encode(png).decode("ascii")
        lines += ["## Histograms (reference overlaid)", "",
                  f"![histograms](data:image/png;base64,{encoded})", ""]
    return "\n".join(lines)
