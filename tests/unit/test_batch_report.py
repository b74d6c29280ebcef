"""A batch's page (report.html): self-contained, naming every failed check, with the images
behind each (leaks beside their match, label disagreements with the model's digit), stored
with the batch, and found again by `digits data show`."""

import base64
import io
import json
import re
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digits.checks.batch import check_batch, report_of
from digits.checks.evidence import gather_evidence
from digits.checks.render import markdown_of, read_template, render_report, renderer, standing
from digits.checks.settings import BatchChecks
from digits.data.batches import PAGE, find_batch, store_batch
from digits.data.intake import Source, source_id
from tests.helpers.batchstore import generated_reference
from tests.helpers.synth import make_digits, make_prototypes

CONFIG = BatchChecks()
REPO = Path(__file__).resolve().parents[2]
IMAGES = re.compile(r'<img\b[^>]*\bsrc="([^"]*)"')


@pytest.fixture(scope="module")
def reference():
    return generated_reference(CONFIG)


@pytest.fixture(scope="module")
def model():
    """A real Keras model that knows the generated digits: each class's weights are its
    prototype (a matched filter), so no training is needed."""
    import keras

    prototypes = make_prototypes().reshape(10, -1).astype("float32")
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    model.layers[-1].set_weights([(prototypes - prototypes.mean()).T * 0.3,
                                  np.zeros(10, "float32")])
    return model


def good(n=60, seed=5):
    images, labels = make_digits(n, seed, make_prototypes())
    return images, labels.astype(np.int64)


def page_of(reference, images, labels, tmp_path, model=None, name="b", path="b.npz",
            unreadable=()):
    source = Source(path, images, labels, list(unreadable))
    report = report_of(check_batch(source, reference[0], model, CONFIG, tmp_path))
    record = {"id": source_id(source), "name": name, "source": path, "rows": len(images),
              "status": report["status"], "reason": report["reason"]}
    return render_report(record, report, gather_evidence(source, reference[0], model, CONFIG)), report


def section(page, check):
    return page.split(f'<section id="check-{check}">', 1)[1].split("</section>", 1)[0]


def pixels(uri):
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def faulty(n=60):
    """Two blanks and four repeats: the blank and duplicates checks fail."""
    images, labels = good(n)
    images[:2] = 0
    images[10:14], labels[10:14] = images[20:24], labels[20:24]
    return images, labels


def test_the_page_is_self_contained(reference, tmp_path):
    images, labels = faulty()
    images[7] = reference[1][42]
    page, _ = page_of(reference, images, labels, tmp_path)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"https?:|//|<script|url\(", text, re.IGNORECASE)
    sources = IMAGES.findall(page)
    assert len(sources) >= 10 and page.count("<img") == len(sources)
    for uri in sources:
        assert pixels(uri).size  # every image is an inline PNG that decodes
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))
    assert "default-src 'none'" in page  # the browser is told to fetch nothing else


def test_the_page_names_each_failed_check_with_a_section(reference, tmp_path):
    images, labels = faulty()
    images[7] = reference[1][42]
    page, report = page_of(reference, images, labels, tmp_path)
    failed = [check["name"] for check in report["checks"] if not check["passed"]]
    assert {"blank", "duplicates", "leakage"} <= set(failed), failed
    for name in failed:
        assert f'<a href="#check-{name}">{name}</a>' in page
        assert f"<h2>{name}: FAIL</h2>" in section(page, name)
    assert "×2 · rows 10, 20" in section(page, "duplicates")
    assert section(page, "blank").count('<td class="tile">') == 2


def test_a_leak_is_shown_beside_its_mnist_match(reference, tmp_path):
    images, labels = good()
    images[7], images[30] = reference[1][42], reference[1][100]
    page, _ = page_of(reference, images, labels, tmp_path)
    leaks = section(page, "leakage")
    figures = re.findall(r'<td class="tile">(.*?)</td>', leaks)
    assert len(figures) == 2
    for figure, row, original in zip(figures, (7, 30), (42, 100)):
        ours, match = IMAGES.findall(figure)
        assert (pixels(ours) == images[row]).all()
        assert (pixels(match) == reference[1][original]).all()
        assert f"row {row} · nearest gap 0.0000" in figure


@pytest.mark.slow  # trains a Keras model
def test_wrong_labels_show_a_grid_with_the_models_digit(reference, model, tmp_path):
    images, labels = good(40)
    wrong = labels.copy()
    wrong[:10] = (labels[:10] + 1) % 10
    page, report = page_of(reference, images, wrong, tmp_path, model=model)
    assert report["reason"].startswith("label-agreement: observed 0.75"), report["reason"]
    captions = re.findall(r"row (\d+) · label (\d) · model (\d) \((0\.\d\d|1\.00)\)",
                          section(page, "label-agreement"))
    assert sorted(int(row) for row, *_ in captions) == list(range(10))
    for row, label, digit, _ in captions:
        assert (int(label), int(digit)) == (wrong[int(row)], labels[int(row)])
    confidences = [float(c) for *_, c in captions]
    assert confidences == sorted(confidences, reverse=True)  # the surest first


def test_names_and_notes_are_escaped(reference, tmp_path):
    images, labels = good()
    page, _ = page_of(reference, images, labels, tmp_path, name="<img src=x onerror=alert(1)>",
                      path='a&b"<i>.npz', unreadable=["<b>bad</b>.png: not an image"])
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'a&b"<i>' not in page and "a&amp;b&quot;&lt;i&gt;.npz" in page
    assert "<b>bad</b>" not in page and "&lt;b&gt;bad&lt;/b&gt;.png" in section(page, "readable")


@pytest.mark.parametrize("observed, bound, passed, expected", [
    (0.045, "<= 0.05", True, "borderline"),
    (0.01, "<= 0.05", True, "pass"),
    (0, "<= 0", True, "pass"),
    (0.85, ">= 0.8", True, "borderline"),
    (0.99, ">= 0.8", True, "pass"),
    (0.5, ">= 0.8", False, "FAIL"),
    (None, ">= 0.8", True, "skipped"),
])
def test_standing(observed, bound, passed, expected):
    assert standing({"observed": observed, "bound": bound, "passed": passed}) == expected


def test_the_page_is_its_template_filled_with_its_style(reference, tmp_path):
    page, _ = page_of(reference, *faulty(), tmp_path)
    assert page.startswith("<!doctype html>") and page.endswith("</html>\n")
    assert f"<style>\n{read_template('report.css')}</style>" in page
    assert "$" not in page  # every placeholder filled


def test_the_templates_are_package_data_found_through_importlib_resources():
    """An installed copy reads them as the checkout does: pyproject ships every file."""
    templates = resources.files("digits.checks") / "templates"
    names = sorted(item.name for item in templates.iterdir())
    assert names == ["report.css", "report.html"]
    assert all((templates / name).read_text(encoding="utf-8").strip() for name in names)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["digits.checks"]
    assert all(any(fnmatch(f"templates/{name}", glob) for glob in shipped) for name in names)


@pytest.mark.slow  # renders the page
def test_the_artifact_is_the_page_as_one_html_block(reference, tmp_path):
    page, _ = page_of(reference, *faulty(), tmp_path)
    markdown = markdown_of(page)
    assert markdown.startswith('<div class="digits-report">') and "<style" not in markdown
    assert "\n\n" not in markdown and not re.search(r"\n\s*\n", markdown)
    assert IMAGES.findall(markdown) == IMAGES.findall(page)


# --- Stored with the batch -------------------------------------------------------------


def stored(tmp_path, reference, images, labels, recheck=None, render=None):
    source = Source("b.npz", images, labels, [])
    report = report_of(check_batch(source, reference[0], None, CONFIG, tmp_path / "work"))
    record = {"id": source_id(source), "name": "b", "rows": len(images),
              "status": report["status"], "reason": report["reason"]}
    render = render or renderer(source, reference[0], None, CONFIG)
    return store_batch(tmp_path / "data", source, record, report, recheck, render=render)


def test_the_page_lands_in_the_batch_folder_with_it(reference, tmp_path):
    folder, written = stored(tmp_path, reference, *good())
    assert written and folder.parent.name == "batches"
    assert "accepted" in (folder / PAGE).read_text()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".staging")]
    assert "report_error" not in json.loads((folder / "batch.json").read_text())


@pytest.mark.slow  # renders the page twice
def test_a_recheck_renders_the_page_again_with_its_verdict(reference, tmp_path):
    first, _ = stored(tmp_path, reference, *good(seed=6))
    images, labels = good()

    def recheck(since):  # as if `since` held a copy: the batch is quarantined under the lock
        record = {"id": source_id(Source("", images, labels, [])), "name": "b", "rows": 60,
                  "status": "quarantined", "reason": "leakage: observed 1, bound <= 0"}
        return record, {**report_of([]), "status": "quarantined", "checks": []}

    folder, _ = stored(tmp_path, reference, images, labels, recheck=recheck)
    assert folder.parent.name == "quarantine"
    assert '<span class="status quarantined">' in (folder / PAGE).read_text()
    assert first.is_dir()


def test_a_page_that_fails_to_render_does_not_lose_the_batch(reference, tmp_path, caplog):
    def broken(record, report):
        raise ValueError("no fonts")

    with caplog.at_level("WARNING", logger="digits.data.batches"):
        folder, written = stored(tmp_path, reference, *good(), render=broken)
    assert written and not (folder / PAGE).exists()
    assert find_batch(tmp_path / "data", folder.name)["report_error"] == "ValueError: no fonts"
    assert f"{PAGE} not written (ValueError: no fonts)" in caplog.text
    assert (folder / "images.npy").is_file() and (folder / "report.json").is_file()


# --- `digits data show` ---------------------------------------------------------------


def test_data_show_prints_where_the_page_is(cli, reference, tmp_path):
    folder, _ = stored(tmp_path, reference, *faulty())
    store = tmp_path / "data"
    code, out, err = cli("data", "show", folder.name[:12], "--store", store)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"batch   {folder.name} (b)"
    assert lines[1].startswith("status  quarantined: ")
    assert lines[2] == f"page    {folder / PAGE}"
    # --store given to `data` itself reaches `show`; the listing is as before.
    assert cli("data", "--store", store, "show", folder.name[:8])[1] == out
    code, out, _ = cli("data", "--json", "--store", store)
    assert code == 0 and [s["id"] for s in json.loads(out)][1:] == [folder.name]
    code, out, _ = cli("data", "--store", store)
    assert code == 0 and "quarantined" in out.splitlines()[1]


def test_data_show_says_why_a_batch_has_no_page(cli, reference, tmp_path):
    folder, _ = stored(tmp_path, reference, *good(), render=lambda record, report: 1 / 0)
    code, out, _ = cli("data", "show", folder.name, "--store", tmp_path / "data")
    assert code == 0
    assert out.splitlines()[-1] == "page    none: ZeroDivisionError: division by zero"


def test_an_unknown_or_ambiguous_id_is_a_usage_error(cli, tmp_path):
    store = tmp_path / "data"
    code, _, err = cli("data", "show", "feed", "--store", store)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: 'feed': no batch with this id in {store} (`digits data` lists them)"]
    for seed in range(17):  # 17 ids over 16 hex digits: two share their first
        images, labels = good(5, seed)
        source = Source("x", images, labels, [])
        store_batch(store, source, {"id": source_id(source), "status": "accepted"}, {})
    firsts = [p.name[0] for p in (store / "batches").iterdir() if not p.name.startswith(".")]
    shared = max(set(firsts), key=firsts.count)
    code, _, err = cli("data", "show", shared, "--store", store)
    assert code == 2
    assert err.strip() == (f"error: '{shared}': matches {firsts.count(shared)} batches; "
                           "give more of the id")


def test_a_batch_with_no_readable_image_still_has_its_page(reference):
    # By hand: check_batch itself cannot measure an empty batch yet (measure_basics).
    source = Source("b", np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64),
                    ["0/a.png: not PNG or JPEG"])
    report = {"status": "quarantined", "reason": "readable: observed 1, bound <= 0", "checks": [
        {"name": "readable", "observed": 1, "bound": "<= 0", "passed": False, "note": ""},
        {"name": "rows", "observed": 0, "bound": ">= 20", "passed": False, "note": ""}]}
    record = {"id": "0" * 64, "name": "b", "status": "quarantined", "reason": report["reason"]}
    page = render_report(record, report, gather_evidence(source, reference[0], None, CONFIG))
    assert "0/a.png: not PNG or JPEG" in section(page, "readable")
    assert "<h2>rows: FAIL</h2>" in section(page, "rows") and "No images." in page


def test_disagreements_that_show_the_same_confidence_keep_row_order():
    # Shown to two places: a model's answers that differ only below that differ by CPU too,
    # so the tiles of equal shown confidence are in row order on every machine.
    from digits.checks.evidence import Evidence
    from digits.checks.render import behind_disagreements

    n, none = 3, np.zeros(3, bool)
    images = np.zeros((n, 28, 28), np.uint8)
    evidence = Evidence(images, np.zeros(n, np.int64), [], {}, {}, np.zeros(10), images,
                        np.zeros(n), images, none, none, none, predicted=np.ones(n, np.int64),
                        confidence=np.array([0.9001, 0.9004, 0.95], np.float32))
    page = behind_disagreements(evidence)
    rows = re.findall(r"row (\d+) · label 0 · model 1 \((0\.\d\d)\)", page)
    assert rows == [("2", "0.95"), ("0", "0.90"), ("1", "0.90")]
