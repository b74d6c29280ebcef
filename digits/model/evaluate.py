"""Evaluate: accuracy, loss, calibration error, per-class precision/recall/F1, confusion
matrix and plots."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import calibration_curve
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from digits.config import DIGITS, IMAGE_SHAPE

PLOT_DPI = 80  # small PNGs: they are embedded base64 in the summary artifact
MAX_WORST = 25  # a 5x5 grid of the most confidently wrong test digits
LOG_EPSILON = 1e-7  # Keras clips probabilities the same way in its cross-entropy
ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) report ECE


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float  # mean sparse categorical cross-entropy
    ece: float  # expected calibration error of the top answer (expected_calibration_error)
    per_class: list[dict]  # {"digit", "precision", "recall", "f1", "support"}
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit
    ece_uncalibrated: float | None = None  # the same model's ECE without its temperature
    not_a_digit_rate: float | None = None  # share of these digits the version's rule flags

    def metrics(self) -> dict:
        """JSON-able metrics for the manifest and the gate."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class NewDataScore:
    """The challenger on the batches' pooled held-out images, and production re-scored on
    the same images in the same run (None when there was no production model)."""

    evaluation: Evaluation
    rows: int
    production_version: str | None
    production_accuracy: float | None

    def metrics(self) -> dict:
        """The manifest's `metrics.new_data`."""
        return {
            **self.evaluation.metrics(),
            "rows": self.rows,
            "production_version": self.production_version,
            "production_accuracy": self.production_accuracy,
        }


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """How far the top answer's probability is from how often it is right: per
    equal-width bin of that probability, |accuracy - mean probability|, weighted by the
    bin's share of the rows. Bins hold (low, high], as calibration_curve draws them."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], confidence)
    # per bin, rows x |accuracy - confidence| is |right answers - summed confidence|
    gaps = np.bincount(which, correct, bins) - np.bincount(which, confidence, bins)
    return float(np.abs(gaps).sum() / len(labels))


def score(labels: np.ndarray, probs: np.ndarray) -> Evaluation:
    preds = probs.argmax(axis=1)
    true_probs = probs[np.arange(len(labels)), labels]
    loss = -np.log(np.clip(true_probs, LOG_EPSILON, 1.0)).mean()
    # zero_division=0: a digit never predicted gets precision 0, not a warning
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=DIGITS, zero_division=0
    )
    per_class = [
        {
            "digit": digit,
            "precision": float(precision[digit]),
            "recall": float(recall[digit]),
            "f1": float(f1[digit]),
            "support": int(support[digit]),
        }
        for digit in DIGITS
    ]
    return Evaluation(
        accuracy=float((preds == labels).mean()),
        loss=float(loss),
        ece=expected_calibration_error(labels, probs),
        per_class=per_class,
        confusion=confusion_matrix(labels, preds, labels=DIGITS).tolist(),
    )


def evaluate_model(
    model, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024
) -> tuple[Evaluation, np.ndarray]:
    """Score a self-contained model on raw 0..255 images; also return its (N, 10) probabilities."""
    probs = np.asarray(model.predict(images, batch_size=batch_size, verbose=0))
    return score(labels.astype(np.int64), probs), probs


def plot_confusion(evaluation: Evaluation, path: Path) -> Path:
    counts = np.array(evaluation.confusion)
    fig = Figure(figsize=(6, 5.5))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    # white text on dark cells, dark text on light ones
    dark = counts > counts.max() / 2
    for (row, col), count in np.ndenumerate(counts):
        ax.text(
            col,
            row,
            count,
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark[row, col] else "black",
        )
    ax.set(
        xticks=DIGITS,
        yticks=DIGITS,
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix (accuracy {evaluation.accuracy:.4f})",
    )
    fig.savefig(path, dpi=PLOT_DPI, bbox_inches="tight")
    return path


def plot_history(history: dict[str, list[float]], path: Path) -> Path:
    fig = Figure(figsize=(9, 3.5))
    for ax, metric in zip(fig.subplots(1, 2), ["loss", "accuracy"]):
        for key, label in [(metric, "train"), (f"val_{metric}", "validation")]:
            if history.get(key):
                epochs = range(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], marker="o", label=label)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlabel="epoch", title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=PLOT_DPI, bbox_inches="tight")
    return path


def plot_reliability(
    labels: np.ndarray, uncalibrated: np.ndarray, probs: np.ndarray, path: Path
) -> Path:
    """The reliability diagram: how often the top answer is right against its probability,
    per ECE bin, before and after calibration; a calibrated model follows the diagonal."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="calibrated")
    for name, rows in (("before", uncalibrated), ("after", probs)):
        right = rows.argmax(axis=1) == labels
        accuracy, confidence = calibration_curve(right, rows.max(axis=1), n_bins=ECE_BINS)
        ece = expected_calibration_error(labels, rows)
        ax.plot(confidence, accuracy, marker="o", label=f"{name} (ECE {ece:.4f})")
    ax.legend(loc="lower right")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="probability of the top answer",
           ylabel="share right", title="Reliability (test split)")
    fig.savefig(path, dpi=PLOT_DPI, bbox_inches="tight")
    return path


def worst_mistakes(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows of the most confidently wrong predictions, most confident first."""
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    # By the confidence as the plot shows it (two places): answers that differ only below
    # that differ by CPU too, so they tie, and ties keep row order on every machine.
    shown = np.round(probs[wrong, preds[wrong]].astype(np.float64), 2)  # as f"{p:.2f}" does
    return wrong[np.argsort(-shown, kind="stable")][:MAX_WORST]


def plot_worst(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, path: Path) -> Path:
    """The worst mistakes as one mosaic in one axes: 25 subplots with titles cost a second
    of layout here, a mosaic with text labels a tenth of that."""
    worst = worst_mistakes(labels, probs)
    cols = min(5, max(len(worst), 1))
    rows = max(-(-len(worst) // cols), 1)
    (height, width), gap, label = IMAGE_SHAPE, 4, 9  # a digit, its gap; room for its label above
    mosaic = np.zeros((rows * (height + gap + label), cols * (width + gap)))
    inches = np.array(mosaic.shape[::-1]) * 2.5 / PLOT_DPI  # each digit pixel 2.5 px wide
    fig = Figure(figsize=(max(inches[0], 3.0), inches[1]), facecolor="black")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    preds = probs.argmax(axis=1)
    for i, row in enumerate(worst):
        top, left = (i // cols) * (height + gap + label) + label, (i % cols) * (width + gap)
        mosaic[top : top + height, left : left + width] = images[row]
        ax.text(left + width // 2, top - 1,
                f"{labels[row]}→{preds[row]} p={probs[row, preds[row]]:.2f}",
                ha="center", va="bottom", fontsize=9, color="white")
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)  # white on black, as MNIST stores digits
    if not len(worst):
        ax.text(0.5, 0.5, "no misclassified digits", ha="center", va="center", color="white",
                transform=ax.transAxes)
    fig.savefig(path, dpi=PLOT_DPI)
    return path


def save_plots(
    evaluation: Evaluation,
    history: dict[str, list[float]],
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    out_dir: Path,
    uncalibrated: np.ndarray | None = None,
) -> list[Path]:
    """Write the confusion matrix, training curves and worst mistakes as PNGs in `out_dir`,
    and the reliability diagram when given the probabilities before calibration."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_confusion(evaluation, out_dir / "confusion_matrix.png"),
        plot_history(history, out_dir / "training_curves.png"),
        plot_worst(images, labels, probs, out_dir / "worst_misclassified.png"),
    ]
    if uncalibrated is not None:
        paths.append(plot_reliability(labels, uncalibrated, probs, out_dir / "reliability.png"))
    return paths


def save_new_data_plots(
    evaluation: Evaluation, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
    out_dir: Path,
) -> list[Path]:
    """Confusion matrix and worst mistakes on the held-out new data (no training curves)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_confusion(evaluation, out_dir / "confusion_matrix.png"),
        plot_worst(images, labels, probs, out_dir / "worst_misclassified.png"),
    ]


def render_summary(
    evaluation: Evaluation, plot_paths: list[Path], title: str = "the test split"
) -> str:
    """Markdown with the plots inlined as data URIs: the Prefect UI renders markdown
    images as plain <img src>, so the plots show without access to the run's files."""
    lines = [
        f"# Evaluation on {title}",
        "",
        f"- accuracy: **{evaluation.accuracy:.4f}**",
        f"- loss: {evaluation.loss:.4f}",
        f"- expected calibration error: {evaluation.ece:.4f}",
        "",
    ]
    for path in plot_paths:
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        lines += [f"## {path.stem}", "", f"![{path.stem}](data:image/png;base64,{encoded})", ""]
    return "\n".join(lines)
