"""A batch's page (`report.html`): its checks with observed values, bounds and verdicts; its
class shares and image statistics against MNIST train's (digits.checks.charts); and the
images behind every failed or borderline check (label disagreements with the production
model's digit and confidence, suspected leaks beside their nearest MNIST test or held-out
image, duplicates, blanks).

Self-contained: every image is a data: URI, the style is inline, there is no script, and a
Content-Security-Policy tells the browser to load nothing else. `render_report` turns a
batch's record, its report.json and the evidence (digits.checks.evidence) into the page
(Pillow for the digit tiles), filling `templates/report.html` and its style
`templates/report.css` (package data) with string.Template. `markdown_of` wraps the page for
a Prefect markdown artifact.

numpy, Pillow and matplotlib; Great Expectations and Keras only when gathering.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

import numpy as np

from digits.checks import drift
from digits.checks.charts import render_shares, render_statistics
from digits.checks.evidence import SAMPLE_TILES, Evidence, gather_evidence
from digits.config import NUM_CLASSES
from digits.data.batches import Render  # batch.json and report.json -> the page

if TYPE_CHECKING:
    from digits.checks.measure import Reference
    from digits.checks.settings import BatchChecks
    from digits.data.intake import Source

BORDERLINE = 0.2  # a passed check within 20% of its bound (relative) is shown as borderline
MAX_TILES = 48  # images per grid: enough to see a pattern, few enough to scan at a glance
GRID_COLUMNS = 8  # tiles a row: a table, which Prefect's UI lays out as the page does


def renderer(source: Source, reference: Reference, model, config: BatchChecks) -> Render:
    """The page's renderer for `store_batch`: the evidence is gathered on first use, so a
    failure there is one `store_batch` records (the batch is stored without its page)."""
    gathered: list[Evidence] = []

    def render(record: dict, report: dict) -> str:
        if not gathered:
            gathered.append(gather_evidence(source, reference, model, config))
        return render_report(record, report, gathered[0])

    return render


# --- The page ------------------------------------------------------------------------


def render_report(record: dict, report: dict, evidence: Evidence) -> str:
    """The whole page: facts, checks, class shares, statistics, then the images behind
    each failed or borderline check."""
    checks = report.get("checks", [])
    parts = [render_facts(record), render_checks(checks), render_shares(evidence),
             render_statistics(evidence)]
    parts += [render_behind(check, evidence) for check in checks
              if standing(check) in ("FAIL", "borderline")]
    title = f"Batch {record.get('name') or record['id'][:12]}"
    body = "\n".join(part for part in parts if part)
    return page_template().substitute(title=escape(title), style=read_template("report.css"),
                                      body=body)


def page_template() -> Template:
    """The page around the body: templates/report.html, whose `$style` is report.css."""
    return Template(read_template("report.html"))


def read_template(name: str) -> str:
    # Package data, so an installed copy finds it as the checkout does.
    return (resources.files("digits.checks") / "templates" / name).read_text(encoding="utf-8")


def markdown_of(page: str) -> str:
    """The page as a Prefect markdown artifact: its body as one HTML block (no blank line
    inside, or the markdown parser would end the block there). Prefect's UI renders raw
    HTML in markdown, sanitised: it keeps tables and data: images but drops <style> (the
    v2 UI then shows the rules as text), so the artifact goes without the style."""
    body = page.split("<body>", 1)[1].rsplit("</body>", 1)[0]
    return "\n".join(line for line in body.splitlines() if line.strip())


def escape(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_facts(record: dict) -> str:
    status = record.get("status", "?")
    rows = [("id", record.get("id")), ("source", record.get("source")),
            ("origin", record.get("origin")), ("images", record.get("rows")),
            ("added", record.get("added_at")), ("reason", record.get("reason"))]
    cells = "".join(f"<tr><th>{name}</th><td>{escape(value)}</td></tr>"
                    for name, value in rows if value is not None)
    return (f'<h1>Batch {escape(record.get("name"))} '
            f'<span class="status {escape(status)}">{escape(status)}</span></h1>'
            f'<table class="facts">{cells}</table>')


def render_checks(checks: list[dict]) -> str:
    rows = []
    for check in checks:
        verdict, name = standing(check), escape(check["name"])
        shown = f'<a href="#check-{name}">{name}</a>' if verdict in ("FAIL", "borderline") else name
        rows.append(f'<tr class="{verdict.lower()}"><td>{shown}</td>'
                    f'<td>{escape(show(check.get("observed")))}</td>'
                    f'<td>{escape(check.get("bound"))}</td><td>{verdict}</td>'
                    f'<td>{escape(check.get("note"))}</td></tr>')
    return ('<h2>Checks</h2><table class="checks"><tr><th>check</th><th>observed</th>'
            f'<th>bound</th><th>verdict</th><th>note</th></tr>{"".join(rows)}</table>')


def show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


BOUND = re.compile(r"(<=|>=)\s*([-+0-9.eE]+)")


def standing(check: dict) -> str:
    """FAIL, skipped (nothing observed), borderline (passed within BORDERLINE of a nonzero
    bound, relative to it) or pass."""
    observed = check.get("observed")
    if not check.get("passed", True):
        return "FAIL"
    if observed is None:
        return "skipped"
    found = BOUND.fullmatch(str(check.get("bound", "")).strip())
    if found:
        limit = float(found.group(2))
        if limit and abs(float(observed) - limit) < BORDERLINE * abs(limit):
            return "borderline"
    return "pass"



# --- The images behind a check ----------------------------------------------------------


def tile_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8), mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_tile(images: list[np.ndarray], caption: str) -> str:
    # Sized by attribute too: Prefect's UI drops the <style> of a markdown artifact.
    pictures = "".join(f'<img alt="" width="56" height="56" src="{tile_uri(image)}">'
                       for image in images)
    return f'<td class="tile">{pictures}<div>{escape(caption)}</div></td>'


def render_grid(tiles: list[str], total: int, what: str) -> str:
    shown = f", the first {len(tiles)} shown" if total > len(tiles) else ""
    return f"<p>{total} {escape(what)}{shown}.</p>{render_table(tiles)}"


def render_table(tiles: list[str]) -> str:
    rows = ["".join(tiles[start:start + GRID_COLUMNS])
            for start in range(0, len(tiles), GRID_COLUMNS)]
    return '<table class="grid">' + "".join(f"<tr>{row}</tr>" for row in rows) + "</table>"


def render_behind(check: dict, evidence: Evidence) -> str:
    name = check["name"]
    inner = BEHIND.get(name, lambda _: "")(evidence) or "<p>No images to show.</p>"
    return (f'<section id="check-{escape(name)}"><h2>{escape(name)}: {standing(check)}</h2>'
            f"<p>{escape(check.get('note'))}</p>{inner}</section>")


def behind_readable(evidence: Evidence) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in evidence.unreadable[:MAX_TILES])
    return f"<p>{len(evidence.unreadable)} unreadable files.</p><ul>{items}</ul>"


def behind_rows(evidence: Evidence, rows: np.ndarray, caption, what: str) -> str:
    tiles = [render_tile([evidence.images[row]], caption(row)) for row in rows[:MAX_TILES]]
    return render_grid(tiles, len(rows), what)


def behind_labels(evidence: Evidence) -> str:
    labels = evidence.labels
    rows = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    return behind_rows(evidence, rows, lambda r: f"row {r} · label {labels[r]}",
                       "images with a label outside 0..9")


def behind_blank(evidence: Evidence) -> str:
    ink = evidence.stats["ink"]
    rows = np.flatnonzero(evidence.blank)
    rows = rows[np.argsort(ink[rows], kind="stable")]
    return behind_rows(evidence, rows, lambda r: f"row {r} · ink {ink[r]:.1%}",
                       "images with (almost) no ink, the emptiest first")


def behind_duplicates(evidence: Evidence) -> str:
    """Each group of byte-identical inked images once, with the rows holding it."""
    flat = evidence.images.reshape(len(evidence.images), -1)
    inked = np.flatnonzero(~evidence.blank)  # empty boxes are all alike: blank counts them
    if not len(inked):
        return ""
    _, first, inverse, counts = np.unique(flat[inked], axis=0, return_index=True,
                                          return_inverse=True, return_counts=True)
    groups = np.flatnonzero(counts > 1)
    groups = groups[np.argsort(-counts[groups], kind="stable")]
    tiles = []
    for group in groups[:MAX_TILES]:
        rows = inked[np.flatnonzero(inverse.ravel() == group)]
        listed = ", ".join(map(str, rows[:6])) + (", ..." if len(rows) > 6 else "")
        tiles.append(render_tile([evidence.images[inked[first[group]]]],
                                 f"×{len(rows)} · rows {listed}"))
    return render_grid(tiles, len(groups), "images stored more than once")


def behind_leaks(evidence: Evidence, mask: np.ndarray, what: str) -> str:
    rows = np.flatnonzero(mask)
    # Ordered by the gap as shown: exact copies' gaps are float noise around 0 that differs
    # by CPU (AVX-512 or not), so equal shown gaps keep row order on every machine.
    rows = rows[np.argsort(np.round(evidence.gaps[rows], 4), kind="stable")]
    tiles = [render_tile([evidence.images[r], evidence.matches[r]],
                         f"row {r} · nearest gap {evidence.gaps[r]:.4f}")
             for r in rows[:MAX_TILES]]
    return ('<p>Each batch image (first) beside its nearest MNIST test or held-out image '
            '(second), with their RMS pixel gap (0..1, both blurred by 1 px).</p>'
            + render_grid(tiles, len(rows), what))


def behind_disagreements(evidence: Evidence) -> str:
    if evidence.predicted is None:
        return ""
    labels, predicted, confidence = evidence.labels, evidence.predicted, evidence.confidence
    rows = np.flatnonzero(predicted != labels)
    shown = np.round(confidence[rows].astype(np.float64), 2)  # as f"{c:.2f}" rounds it
    rows = rows[np.argsort(-shown, kind="stable")]
    return behind_rows(
        evidence, rows,
        lambda r: f"row {r} · label {labels[r]} · model {predicted[r]} ({confidence[r]:.2f})",
        "images whose label the production model disagrees with, the most confident first")


def behind_statistic(evidence: Evidence) -> str:
    """The images furthest out on the statistic that moved most, in the direction it moved."""
    if not len(evidence.images):
        return ""
    name, direction = furthest_statistic(evidence)
    values = evidence.stats[name]
    rows = np.argsort(-direction * values, kind="stable")
    return behind_rows(evidence, rows, lambda r: f"row {r} · {name} {values[r]:.3g}",
                       f"images, ordered by {name} ({'highest' if direction > 0 else 'lowest'}"
                       " first)")


def furthest_statistic(evidence: Evidence) -> tuple[str, int]:
    """The statistic whose batch mean lies furthest from MNIST train's (in its sds), as
    drift.stat_shift measures, and the sign of the gap."""
    gaps = {}
    for name in drift.STATS:
        theirs = evidence.reference_stats[name]
        gaps[name] = (evidence.stats[name].mean() - theirs.mean()) / max(theirs.std(), 1e-9)
    name = max(gaps, key=lambda key: abs(gaps[key]))
    return name, 1 if gaps[name] >= 0 else -1


def behind_drift(evidence: Evidence) -> str:
    ours = [render_tile([image], f"row {row}")
            for row, image in enumerate(evidence.images[:SAMPLE_TILES])]
    theirs = [render_tile([image], "MNIST train") for image in evidence.reference_images]
    return ("<h3>The batch</h3>" + render_grid(ours, len(evidence.images), "images")
            + f"<h3>MNIST train</h3>{render_table(theirs)}")


BEHIND: dict[str, Callable[[Evidence], str]] = {
    "readable": behind_readable,
    "labels": behind_labels,
    "duplicates": behind_duplicates,
    "blank": behind_blank,
    "leakage": lambda e: behind_leaks(e, e.copies, "copies of MNIST test or held-out images"),
    "likely-leakage": lambda e: behind_leaks(e, e.likely, "likely re-drawn leaks"),
    "class-shares": lambda e: '<p>See <a href="#class-shares">class shares</a>.</p>',
    "ink-stroke": behind_statistic,
    "feature-drift": behind_drift,
    "label-agreement": behind_disagreements,
}
