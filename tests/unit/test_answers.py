"""Whole answers: `Predictor.answers` (digits.load) and `digits predict`, plain and --json,
for a version with a not-a-digit rule (v1) and one published before the rule (v2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import digits
from digits.model.not_a_digit import SPREAD, spread
from digits.registry.store import Registry
from tests.helpers.manifests import make_manifest
from tests.helpers.serving import write_dense_onnx

RULE = {"rule": SPREAD, "threshold": 2.0,
        "method": "outlier exposure", "fitted_on": "validation", "rows": 5000,
        "flagged_validation": 0.005}
KEYS = ["digit", "probability", "probabilities", "not_a_digit"]


def unsure_and_sure() -> np.ndarray:
    """A blank image, which the tiny model answers 8 at about 15%, near flat (flagged by
    RULE), and a full one, which it answers 3 at over 99%."""
    return np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """v1: a tiny ONNX model with RULE in its manifest; v2 (production): the same model,
    published as before the rule."""
    root = tmp_path_factory.mktemp("answers")
    kernel = np.zeros((784, 10))
    kernel[:, 3] = 20 / 784  # a full image: logit 20 for 3
    bias = np.zeros(10)
    bias[8] = 0.5  # a blank image: 8, barely
    registry = Registry(root / "registry")
    for manifest in ({**make_manifest(), "not_a_digit": RULE}, make_manifest()):
        source = root / "source"
        source.mkdir()
        write_dense_onnx(source / "model.onnx", kernel, bias)
        (source / "model.keras").write_bytes(b"a stand-in: the ONNX export answers")
        registry.publish(source, manifest)
        shutil.rmtree(source)
    return registry.root


def test_answers_are_predict_s_probabilities_with_the_digit_and_the_version_s_flag(registry):
    model = digits.load("v1", registry)
    images = unsure_and_sure()
    probabilities = model.predict(images)
    answers = model.answers(images)
    assert [list(answer) for answer in answers] == [KEYS, KEYS]
    assert [answer["digit"] for answer in answers] == [8, 3]
    assert [answer["not_a_digit"] for answer in answers] == [True, False]
    for answer, row in zip(answers, probabilities):
        assert type(answer["digit"]) is int and type(answer["not_a_digit"]) is bool
        assert answer["probabilities"] == pytest.approx(row.tolist())
        assert all(type(p) is float for p in answer["probabilities"])
        assert answer["probability"] == pytest.approx(float(row.max()))
    assert spread(probabilities[:1]) < RULE["threshold"] < spread(probabilities[1:])
    json.dumps(answers)  # plain Python: it serialises as it is


def test_a_version_without_a_rule_flags_nothing(registry):
    model = digits.load("v2", registry)
    answers = model.answers(unsure_and_sure())
    assert [(a["digit"], a["not_a_digit"]) for a in answers] == [(8, False), (3, False)]
    assert model.answers(unsure_and_sure()[0])[0]["digit"] == 8  # one (28, 28) image


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, unsure_and_sure())
    return path


def test_predict_json_prints_one_object_a_row(cli, registry, rows):
    code, out, err = cli("predict", rows, "--json", "--ref", "v1", "--registry", registry)
    assert code == 0, err
    printed = [json.loads(line) for line in out.splitlines()]
    expected = digits.load("v1", registry).answers(unsure_and_sure())
    assert [list(answer) for answer in printed] == [["file", *KEYS]] * 2
    assert [answer["file"] for answer in printed] == ["rows.npy[0]", "rows.npy[1]"]
    for answer, want in zip(printed, expected):
        assert (answer["digit"], answer["not_a_digit"]) == (want["digit"], want["not_a_digit"])
        assert answer["probabilities"] == pytest.approx(want["probabilities"])
        assert answer["probability"] == pytest.approx(want["probability"])


def test_predict_says_not_a_digit_with_the_closest_one(cli, registry, rows):
    code, out, err = cli("predict", rows, "--ref", "v1", "--registry", registry)
    assert code == 0, err  # a flagged answer is an answer: exit 0
    closest = digits.load("v1", registry).answers(unsure_and_sure())[0]["probability"]
    assert out.splitlines() == [f"rows.npy[0]\tnot a digit (closest: 8, {closest:.0%})",
                                "rows.npy[1]\t3\t1.0000"]


def test_predict_with_a_version_without_a_rule_prints_every_digit(cli, registry, rows):
    code, out, err = cli("predict", rows, "--registry", registry)  # production: v2
    assert code == 0, err
    assert [line.split("\t")[:2] for line in out.splitlines()] == [
        ["rows.npy[0]", "8"], ["rows.npy[1]", "3"]]
    code, out, _ = cli("predict", rows, "--json", "--registry", registry)
    assert [json.loads(line)["not_a_digit"] for line in out.splitlines()] == [False, False]
