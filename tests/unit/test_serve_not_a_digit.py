"""Issue 30: every answer of the HTTP service carries "not a digit", by the served version's
rule (Predictor.not_a_digit on its manifest's `not_a_digit`): /v1/predict, the Open Inference
Protocol's BOOL output, MLflow's scoring answer, the metrics and the prediction log; TF
Serving's one-output signature is left as it was. A tiny ONNX version (no TensorFlow) with a
rule that flags one known image and keeps another, and one without a rule (never flagged)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from digits.model.not_a_digit import spread
from digits.monitoring.reader import read_log
from digits.registry.store import Registry
from tests.helpers.serving import (
    dense_probabilities,
    mnist_like,
    publish_model,
    rule_between,
    save_tiny_onnx,
    serving,
    tiny_weights,
)

INFER = "/v2/models/digits/infer"
CANDIDATES = mnist_like(6, seed=30)
SPREADS = spread(dense_probabilities(*tiny_weights(1), CANDIDATES))
FLAGGED, KEPT = CANDIDATES[SPREADS.argmin()], CANDIDATES[SPREADS.argmax()]
PIXELS = np.stack([FLAGGED, KEPT])  # v1's rule flags the first and keeps the second
FLAGS = [True, False]


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    """v1 (production) with a rule between FLAGGED and KEPT; v2, the same model, without."""
    root = tmp_path_factory.mktemp("nad")
    registry = Registry(root / "registry")
    model = save_tiny_onnx(root / "tiny", 1)
    probabilities = dense_probabilities(*tiny_weights(1), PIXELS)
    publish_model(registry, model, not_a_digit=rule_between(probabilities[:1], probabilities[1:]))
    publish_model(registry, model, alias="unruled")
    return registry


@pytest.fixture(scope="module")
def client(registry):
    with serving(registry) as client:
        yield client


def predict(client: TestClient, pixels: np.ndarray) -> list[dict]:
    answer = client.post("/v1/predict", json={"instances": pixels.tolist()})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def infer(client: TestClient, body: dict):
    tensor = {"name": "images", "shape": list(PIXELS.shape), "datatype": "UINT8",
              "data": PIXELS.ravel().tolist()}
    answer = client.post(INFER, json={"inputs": [tensor], **body})
    assert answer.status_code == 200, answer.text
    return answer


def test_v1_predict_flags_what_the_versions_rule_flags(client):
    predictions = predict(client, PIXELS)
    assert [row["not_a_digit"] for row in predictions] == FLAGS
    assert all(len(row["probabilities"]) == 10 for row in predictions)  # the digit stays


def test_a_version_without_a_rule_flags_nothing(registry, tmp_path):
    with serving(registry, ref="unruled") as client:
        assert [row["not_a_digit"] for row in predict(client, PIXELS)] == [False, False]
        outputs = infer(client, {}).json()["outputs"]
        assert outputs[2] == {"name": "not_a_digit", "datatype": "BOOL", "shape": [2],
                              "data": [False, False]}


def test_oip_answers_not_a_digit_as_a_bool_tensor(client):
    outputs = infer(client, {}).json()["outputs"]
    assert [output["name"] for output in outputs] == ["probabilities", "digit", "not_a_digit"]
    assert outputs[2] == {"name": "not_a_digit", "datatype": "BOOL", "shape": [2], "data": FLAGS}


def test_oip_answers_only_the_outputs_asked_for(client):
    only = infer(client, {"outputs": [{"name": "probabilities"}]}).json()["outputs"]
    assert [output["name"] for output in only] == ["probabilities"]
    flags = infer(client, {"outputs": [{"name": "not_a_digit"}]}).json()["outputs"]
    assert flags == [{"name": "not_a_digit", "datatype": "BOOL", "shape": [2], "data": FLAGS}]


def test_oip_binary_bool_is_one_byte_an_element_as_tritons(client):
    answer = infer(client, {"outputs": [{"name": "digit"}, {"name": "not_a_digit"}],
                            "parameters": {"binary_data_output": True}})
    length = int(answer.headers["inference-header-content-length"])
    header, raw = json.loads(answer.content[:length]), answer.content[length:]
    digit, flags = header["outputs"]
    assert flags["parameters"] == {"binary_data_size": 2} and "data" not in flags
    assert raw[digit["parameters"]["binary_data_size"]:] == b"\x01\x00"


def test_oip_metadata_and_config_list_the_output(client):
    outputs = client.get("/v2/models/digits").json()["outputs"]
    assert outputs[-1] == {"name": "not_a_digit", "datatype": "BOOL", "shape": [-1]}
    config = client.get("/v2/models/digits/config").json()["output"]
    assert config[-1] == {"name": "not_a_digit", "data_type": "TYPE_BOOL", "dims": [1],
                          "reshape": {"shape": []}}


def test_mlflow_answers_the_flags_beside_the_predictions(client):
    for body in ({"instances": PIXELS.tolist()},
                 {"dataframe_split": {"data": PIXELS.reshape(2, 784).tolist()}}):
        answer = client.post("/invocations", json=body)
        assert answer.status_code == 200, answer.text
        assert list(answer.json()) == ["predictions", "not_a_digit"]
        assert np.shape(answer.json()["predictions"]) == (2, 10)
        assert answer.json()["not_a_digit"] == FLAGS


def test_tf_serving_keeps_its_one_output(client):
    answer = client.post("/v1/models/digits:predict", json={"instances": PIXELS.tolist()})
    assert list(answer.json()) == ["predictions"]
    assert np.shape(answer.json()["predictions"]) == (2, 10)


def flagged_count(client: TestClient, version: str) -> float:
    text = client.get("/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "digits_not_a_digit_total"
               and sample.labels == {"version": version})


def test_metrics_count_the_flagged_answers_of_each_version(client):
    before = flagged_count(client, "v1")
    predict(client, PIXELS)
    predict(client, np.stack([KEPT, KEPT]))
    client.post("/invocations", json={"instances": np.stack([FLAGGED] * 3).tolist()})
    assert flagged_count(client, "v1") - before == 4


def test_the_prediction_log_records_the_flags(registry, tmp_path):
    with serving(registry, log_dir=tmp_path / "log") as client:
        ids = [row["id"] for row in predict(client, PIXELS)]
    logged = read_log(tmp_path / "log")
    assert logged.ids.tolist() == ids and logged.not_a_digit.tolist() == FLAGS
