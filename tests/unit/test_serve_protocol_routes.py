"""Issue 29: each protocol as its real clients send it, on the app (the real clients run in
tests/integration/test_serve_clients.py). OIP bodies with no Content-Type, binary tensors
in and out, versioned routes; MLflow's data frames, /health and /version; TF Serving's
REST API on /v1/models/digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.manifests import make_manifest
from tests.helpers.serving import mnist_like
from tests.unit.test_serve_protocols import INFER, serving, tensor, v1_probabilities

PIXELS = mnist_like(3, seed=11)


@pytest.fixture
def client(registry):
    with serving(registry) as client:
        yield client


BODY = json.dumps({"inputs": [tensor(PIXELS)]}).encode()


@pytest.mark.parametrize("content_type", [None, "application/json; charset=utf-8",
                                          "application/JSON;charset=\"UTF-8\""])
def test_infer_takes_json_with_no_or_any_json_content_type(client, content_type):
    """tritonclient sends no Content-Type (the issue's 415 'none' for every infer)."""
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post(INFER, content=BODY, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize("headers, message", [
    ({"content-type": "application/json; charset=latin-1"}, "charset 'latin-1'"),
    ({"content-type": "text/plain"}, "'text/plain'"),
    ({"content-encoding": "gzip"}, "Content-Encoding 'gzip'"),
    ({"content-encoding": "deflate"}, "Content-Encoding 'deflate'"),
])
def test_infer_refuses_what_it_cannot_read_with_a_415_naming_it(client, headers, message):
    answer = client.post(INFER, content=BODY, headers=headers)
    assert answer.status_code == 415 and message in answer.json()["error"]


def split_binary(answer) -> tuple[dict, bytes]:
    length = int(answer.headers["inference-header-content-length"])
    return json.loads(answer.content[:length]), answer.content[length:]


def test_binary_tensors_in_and_out(client):
    """As tritonclient sends FP32 from set_data_from_numpy(binary_data=True) and asks for
    every output in binary (its default: binary_data_output)."""
    values = PIXELS.astype("<f4")
    header = json.dumps({
        "id": "7",
        "inputs": [{"name": "images", "shape": [3, 28, 28], "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes}}],
        "parameters": {"binary_data_output": True}}).encode()
    answer = client.post(INFER, content=header + values.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    document, raw = split_binary(answer)
    probabilities, digit, not_a_digit = document["outputs"]
    assert document["id"] == "7" and "data" not in probabilities
    assert probabilities["parameters"] == {"binary_data_size": 3 * 10 * 4}
    assert digit == {"name": "digit", "datatype": "INT64", "shape": [3],
                     "parameters": {"binary_data_size": 3 * 8}}
    assert not_a_digit == {"name": "not_a_digit", "datatype": "BOOL", "shape": [3],
                           "parameters": {"binary_data_size": 3}}  # a byte each, as Triton's
    expected = v1_probabilities(client, PIXELS)
    np.testing.assert_allclose(np.frombuffer(raw[:120], "<f4").reshape(3, 10), expected,
                               atol=1e-7)
    assert np.frombuffer(raw[120:144], "<i8").tolist() == expected.argmax(axis=1).tolist()
    assert raw[144:] == bytes(3)  # the stand-in's version has no rule: all false


def test_one_output_in_binary_the_other_in_json(client):
    body = {"inputs": [tensor(PIXELS)],
            "outputs": [{"name": "probabilities"},
                        {"name": "digit", "parameters": {"binary_data": True}}]}
    document, raw = split_binary(client.post(INFER, json=body))
    assert len(document["outputs"][0]["data"]) == 30
    assert np.frombuffer(raw, "<i8").shape == (3,)


def test_the_served_version_answers_under_its_version_routes(client, registry, source):
    registry.publish(source, make_manifest(), alias=None)  # v2: in the registry, not served
    for version in ("v1", "1"):
        base = f"/v2/models/digits/versions/{version}"
        assert client.get(f"{base}/ready").json() == {"name": "digits", "ready": True}
        assert client.get(base).json()["versions"] == ["v1"]
        answer = client.post(f"{base}/infer", json={"inputs": [tensor(PIXELS)]})
        assert answer.status_code == 200 and answer.json()["model_version"] == "v1"
    other = client.get("/v2/models/digits/versions/v2/ready")
    assert other.status_code == 400
    assert "serves v1" in other.json()["error"] and "digits serve --ref v2" in other.json()["error"]
    assert client.post("/v2/models/digits/versions/v2/infer", content=BODY).status_code == 400
    for unknown in ("v9", "latest"):
        answer = client.get(f"/v2/models/digits/versions/{unknown}/ready")
        assert answer.status_code == 404 and "unknown version" in answer.json()["error"]


def test_model_config_and_what_is_not_offered(client):
    config = client.get("/v2/models/digits/config").json()
    assert config["max_batch_size"] == 1000 and config["input"][0]["dims"] == [28, 28]
    assert client.get("/v2/models/digits/versions/v1/config").json() == config
    for method, path, word in [("GET", "/v2/models/digits/stats", "/metrics"),
                               ("GET", "/v2/models/stats", "/metrics"),
                               ("POST", "/v2/repository/index", "repository")]:
        answer = client.request(method, path)
        assert answer.status_code == 404 and word in answer.json()["error"], path


# --- MLflow --------------------------------------------------------------------------------


def test_mlflow_data_frames_health_and_version(client):
    frame = {"columns": [str(i) for i in range(784)], "index": [0, 1, 2],
             "data": PIXELS.reshape(3, 784).tolist()}
    answer = client.post("/invocations", json={"dataframe_split": frame, "params": {"a": 1}})
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], v1_probabilities(client, PIXELS),
                               atol=1e-7)
    assert client.get("/health").status_code == 200
    version = client.get("/version")
    assert version.status_code == 200 and version.text[0].isdigit()


# --- TF Serving ----------------------------------------------------------------------------

PREDICT = "/v1/models/digits:predict"


@pytest.mark.parametrize("body, field", [
    ({"instances": PIXELS.tolist()}, "predictions"),
    ({"signature_name": "serving_default", "instances": [{"images": i} for i in PIXELS.tolist()]},
     "predictions"),
    ({"inputs": PIXELS.reshape(3, 784).tolist()}, "outputs"),
    ({"inputs": {"images": PIXELS.tolist()}}, "outputs"),
])
def test_tf_serving_predict(client, body, field):
    for path in (PREDICT, "/v1/models/digits/versions/1:predict"):
        answer = client.post(path, json=body)
        assert answer.status_code == 200, answer.text
        assert list(answer.json()) == [field]
        np.testing.assert_allclose(answer.json()[field], v1_probabilities(client, PIXELS),
                                   atol=1e-7)


def test_tf_serving_takes_curls_form_type_as_its_examples_send(client):
    answer = client.post(PREDICT, content=json.dumps({"instances": PIXELS.tolist()}),
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200, answer.text


def test_tf_serving_status_metadata_and_errors(client):
    status = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                        "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.get("/v1/models/digits").json() == status
    assert client.get("/v1/models/digits/versions/1").json() == status
    metadata = client.get("/v1/models/digits/metadata").json()
    assert metadata["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert [d["size"] for d in signature["inputs"]["images"]["tensor_shape"]["dim"]] == [
        "-1", "28", "28"]
    bad = client.post(PREDICT, json={"instances": [[1, 2]]})
    assert bad.status_code == 400 and list(bad.json()) == ["error"]
    assert client.post("/v1/models/mnist:predict", json={}).status_code == 404


@pytest.mark.parametrize("path", [PREDICT, "/v1/models/digits/versions/1:predict"])
def test_tf_serving_predict_by_get_is_the_wrong_method_not_an_unknown_model(client, path):
    """Without its own route, GET .../digits:predict reached the status routes as a model
    (or version) named "digits:predict", a 404 (schemathesis: an undeclared method is 405)."""
    answer = client.get(path)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert list(answer.json()) == ["error"]
