"""The charts of a batch's page (digits.checks.render): its class shares and image
statistics against MNIST train's, drawn on matplotlib's Agg canvas as PNG data: URIs.
digits.monitoring.traffic_report draws the served traffic's histograms with the same bins and units.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

from digits.checks import drift
from digits.config import NUM_CLASSES

if TYPE_CHECKING:
    from digits.checks.evidence import Evidence


def figure_uri(figure) -> str:
    """A matplotlib Figure as a PNG data: URI, drawn on an Agg canvas of its own (no pyplot
    state, nothing shown)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def known_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    return labels[(labels >= 0) & (labels < NUM_CLASSES)]


def render_shares(evidence: Evidence) -> str:
    from matplotlib.figure import Figure

    known = known_labels(evidence.labels)
    shares, theirs = drift.class_shares(known), evidence.reference_shares
    figure = Figure(figsize=(7, 2.6), layout="constrained")
    axes = figure.add_subplot()
    digits = np.arange(NUM_CLASSES)
    axes.bar(digits - 0.2, shares, 0.4, label="batch")
    axes.bar(digits + 0.2, theirs, 0.4, label="MNIST train", color="0.6")
    axes.set(xticks=digits, xlabel="digit", ylabel="share")
    axes.legend(loc="upper right", fontsize="small")
    counts = np.bincount(known.astype(np.int64), minlength=NUM_CLASSES)[:NUM_CLASSES]
    rows = "".join(f"<tr><td>{d}</td><td>{counts[d]}</td><td>{shares[d]:.3f}</td>"
                   f"<td>{theirs[d]:.3f}</td><td>{shares[d] - theirs[d]:+.3f}</td></tr>"
                   for d in digits)
    return ('<h2 id="class-shares">Class shares</h2>'
            f'<img class="chart" alt="class shares" src="{figure_uri(figure)}">'
            '<table class="shares"><tr><th>digit</th><th>images</th><th>batch</th>'
            f'<th>MNIST train</th><th>difference</th></tr>{rows}</table>')


def render_statistics(evidence: Evidence) -> str:
    if not len(evidence.images):
        return "<h2>Image statistics</h2><p>No images.</p>"
    from matplotlib.figure import Figure

    figure = Figure(figsize=(14, 2.6), layout="constrained")
    for axes, name in zip(figure.subplots(1, len(drift.STATS)), drift.STATS):
        ours, theirs = evidence.stats[name], evidence.reference_stats[name]
        edges = drift.bin_edges(name, np.concatenate([ours, theirs]))
        axes.hist(ours, edges, density=True, alpha=0.7, label="batch")
        axes.hist(theirs, edges, density=True, histtype="step", color="k", linewidth=1.2,
                  label="MNIST train")
        axes.set(title=name, xlabel=drift.UNITS[name], yticks=[])
    figure.axes[0].legend(fontsize="small")
    return ('<h2 id="statistics">Image statistics</h2><p>Batch (bars) against MNIST train '
            '(outline), densities.</p>'
            f'<img class="chart" alt="image statistics" src="{figure_uri(figure)}">')

