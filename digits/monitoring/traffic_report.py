"""The `serving-drift` artifact of `digits drift`: the histograms of the served traffic
against the reference (one PNG), and the markdown with the verdict and the table.

numpy and matplotlib.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure

from digits.checks import drift
from digits.config import DIGITS
from digits.monitoring.traffic import Traffic, TrafficDrift

PLOT_DPI = 80  # small PNGs: embedded base64 in the artifact, as the evaluation's plots are


def plot_traffic(traffic: Traffic) -> bytes:
    """Histograms of each statistic, the answered digits' shares and the confidence, served
    against the reference overlaid, as one PNG."""
    fig = Figure(figsize=(13, 6))
    axes = fig.subplots(2, 4).ravel()
    for ax, name in zip(axes, drift.STATS):
        ours, theirs = traffic.stats[name], traffic.reference_stats[name]
        overlay(ax, ours, theirs, name, "MNIST train",
                bins=drift.bin_edges(name, np.concatenate([ours, theirs])))
        ax.set(xlabel=drift.UNITS[name])
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
