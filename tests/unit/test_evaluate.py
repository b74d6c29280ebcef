"""Evaluation metrics and plots on a hand-wired model whose predictions are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from digits.model import evaluate as ev

# Every test scores or plots a small Keras model (Keras takes seconds to import here).
pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HISTORY = {
    "loss": [0.9, 0.5, 0.3],
    "accuracy": [0.7, 0.85, 0.9],
    "val_loss": [0.8, 0.6, 0.5],
    "val_accuracy": [0.75, 0.8, 0.82],
}


@pytest.fixture(scope="module")
def model():  # a keras.Model
    import keras

    """Predicts digit k for an image whose only lit pixel is (0, k): the kernel reads that
    pixel into logit k, so a 255 pixel gives class k a probability of almost 1."""
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    kernel = np.zeros((784, 10), dtype=np.float32)
    kernel[np.arange(10), np.arange(10)] = 0.05
    model.layers[-1].set_weights([kernel, np.zeros(10, dtype=np.float32)])
    return model


def make_data(drawn: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images lighting pixel (0, drawn[i]); `labels` may disagree to force mistakes."""
    images = np.zeros((len(drawn), 28, 28), dtype=np.uint8)
    images[np.arange(len(drawn)), 0, drawn] = 255
    return images, labels.astype(np.int64)


@pytest.fixture(scope="module")
def mixed(model):
    drawn = np.arange(40) % 10
    labels = drawn.copy()
    labels[:7] = (labels[:7] + 3) % 10  # seven known mistakes
    images, labels = make_data(drawn, labels)
    evaluation, probs = ev.evaluate_model(model, images, labels)
    return evaluation, probs, images, labels


def test_accuracy_matches_sklearn(mixed):
    evaluation, probs, _, labels = mixed
    assert probs.shape == (40, 10)
    assert evaluation.accuracy == pytest.approx(accuracy_score(labels, probs.argmax(axis=1)))
    assert evaluation.accuracy == pytest.approx(33 / 40)


def test_loss_matches_keras(mixed):
    import keras

    evaluation, probs, _, labels = mixed
    expected = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
    assert evaluation.loss == pytest.approx(float(expected), rel=1e-4)


def test_per_class_and_confusion(mixed):
    evaluation, _, _, labels = mixed
    assert [row["digit"] for row in evaluation.per_class] == list(range(10))
    assert sum(row["support"] for row in evaluation.per_class) == len(labels)
    assert all(
        0 <= row[k] <= 1 for row in evaluation.per_class for k in ("precision", "recall", "f1")
    )
    confusion = np.array(evaluation.confusion)
    assert confusion.shape == (10, 10)
    assert confusion.sum() == len(labels)
    assert np.trace(confusion) == 33


def test_metrics_are_json(mixed):
    metrics = mixed[0].metrics()
    assert set(metrics) == {"accuracy", "loss", "ece", "per_class", "confusion"}
    assert json.loads(json.dumps(metrics)) == metrics


@pytest.fixture(scope="module")
def plots(mixed, tmp_path_factory):
    evaluation, probs, images, labels = mixed
    out_dir = tmp_path_factory.mktemp("plots")
    return out_dir, ev.save_plots(evaluation, HISTORY, images, labels, probs, out_dir)


def assert_pngs(paths, out_dir):
    names = {"confusion_matrix.png", "training_curves.png", "worst_misclassified.png"}
    assert {path.name for path in paths} == names
    for path in paths:
        assert path.parent == out_dir
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_save_plots(plots):
    out_dir, paths = plots
    assert_pngs(paths, out_dir)


def test_save_plots_without_mistakes_or_validation(model, tmp_path):
    images, labels = make_data(np.arange(10), np.arange(10))
    evaluation, probs = ev.evaluate_model(model, images, labels)
    assert evaluation.accuracy == 1.0
    history = {"loss": HISTORY["loss"], "accuracy": HISTORY["accuracy"]}
    out_dir = tmp_path / "plots"  # not there yet: save_plots creates it
    assert_pngs(ev.save_plots(evaluation, history, images, labels, probs, out_dir), out_dir)


def test_save_plots_without_history(mixed, tmp_path):
    evaluation, probs, images, labels = mixed
    assert_pngs(ev.save_plots(evaluation, {}, images, labels, probs, tmp_path), tmp_path)


def test_the_reliability_diagram_is_drawn(mixed, tmp_path):
    # save_plots adds it given the uncalibrated probabilities: the retrain flow test checks
    # the version lists it.
    _, probs, _, labels = mixed
    sharper = probs**3 / (probs**3).sum(axis=1, keepdims=True)
    path = ev.plot_reliability(labels, sharper, probs, tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_summary_embeds_plots(mixed, plots):
    evaluation = mixed[0]
    summary = ev.render_summary(evaluation, plots[1])
    assert f"{evaluation.accuracy:.4f}" in summary
    assert summary.count("](data:image/png;base64,iVBORw0KGgo") == 3  # base64 of PNG magic
    assert len(summary) < 300_000  # small enough for the Prefect database and UI


def test_publish_creates_artifacts(mixed, plots, monkeypatch):
    """The artifact calls themselves need a Prefect API: the flow tests cover those."""
    calls = {}
    import tasks.evaluate as evaluate_task

    record = monkeypatch.setattr
    record(evaluate_task, "create_table_artifact", lambda **kw: calls.setdefault("table", kw))
    record(evaluate_task, "create_markdown_artifact", lambda **kw: calls.setdefault("md", kw))
    evaluate_task.publish_evaluation(mixed[0], plots[1])
    assert calls["table"]["key"] == "per-class-metrics"
    assert len(calls["table"]["table"]) == 10
    assert calls["md"]["key"] == "evaluation-summary"
    assert "data:image/png;base64," in calls["md"]["markdown"]


def test_worst_mistakes_are_the_most_confidently_wrong_first():
    labels = np.array([0, 1, 2, 3])
    probs = np.full((4, 10), 0.01)
    probs[0, 0] = 0.91  # right
    probs[1, 7] = 0.60  # wrong, less sure
    probs[2, 5] = 0.91  # wrong, surest
    probs[3, 3], probs[3, 4] = 0.45, 0.46  # wrong, barely
    assert ev.worst_mistakes(labels, probs).tolist() == [2, 1, 3]


def test_worst_mistakes_keep_row_order_among_equal_confidence():
    # Saturated float32 answers tie (at 1.0 and elsewhere); the plot must show the same
    # digits on every CPU, and numpy's default sort orders ties by the CPU's vector units.
    labels = np.zeros(60, dtype=np.int64)
    probs = np.zeros((60, 10), dtype=np.float32)
    probs[:, 3] = np.random.default_rng(0).choice(np.float32([0.5, 0.9, 1.0]), 60)  # all wrong
    expected = sorted(range(60), key=lambda row: -probs[row, 3])  # Python's sort is stable
    assert ev.worst_mistakes(labels, probs).tolist() == expected[:ev.MAX_WORST]


def test_worst_mistakes_that_show_the_same_confidence_keep_row_order():
    # The plot shows p to two places: answers that differ below that differ by CPU too (a
    # model's float rounding), so they are one tie, in row order, on every machine.
    labels = np.zeros(3, dtype=np.int64)
    probs = np.zeros((3, 10), dtype=np.float32)
    probs[:, 3] = [0.9001, 0.9004, 0.95]  # all wrong; rows 0 and 1 both show p=0.90
    assert ev.worst_mistakes(labels, probs).tolist() == [2, 0, 1]
