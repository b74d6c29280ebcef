"""Issue 29: the clients people run, unmodified, against a real `digits serve`: Triton's
(tritonclient[http]: JSON and binary tensors, binary outputs, versioned readiness and infer,
server metadata and config), MLflow's (`ScoringServerClient`: a numpy array, a pandas
DataFrame, a dict of one tensor, params, /version) and a TF Serving REST request (TF Serving
ships no Python REST client). Every answer is compared with /v1/predict's for the same
images, its "not a digit" flags too (issue 30: v1's rule flags the least sure of the three
images). One service for the file: v1 served, v2 in the registry but not served, a web app's
origin allowed (`--cors-origin`), so the clients, which send no Origin, pass the CORS and
same-origin guards as they will in a service that allows one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import httpx
import numpy as np
import pytest

from digits.model.not_a_digit import spread
from digits.registry.store import Registry
from tests.helpers.manifests import make_manifest
from tests.helpers.processes import BIN, answers, background, free_port, wait_for
from tests.helpers.serving import (
    dense_probabilities,
    mnist_like,
    rule_between,
    save_tiny_onnx,
    tiny_weights,
)

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 60  # an ONNX model: no TensorFlow to import
PIXELS = mnist_like(3, seed=29)


@dataclass
class Service:
    url: str
    port: int
    expected: np.ndarray  # /v1/predict's probabilities for PIXELS
    flags: list[bool]  # /v1/predict's not_a_digit for PIXELS: v1's rule flags one, not all


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("clients")
    registry = Registry(root / "registry")
    probabilities = dense_probabilities(*tiny_weights(1), PIXELS)
    order = np.argsort(spread(probabilities), kind="stable")
    rule = rule_between(probabilities[order[:1]], probabilities[order[1:]])
    registry.publish(save_tiny_onnx(root / "a", 1), {**make_manifest(), "not_a_digit": rule})
    registry.publish(save_tiny_onnx(root / "b", 2), make_manifest(), alias=None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "digits"), "serve", "--port", str(port), "--registry", str(registry.root),
               "--cors-origin", "https://app.example"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = root / "serve.log"
    with background(command, env, log) as process:
        ready = f"{url}/readyz"
        wait_for(lambda: answers(ready, process, log), STARTUP_SECONDS, ready, every=0.5, log=log)
        answer = httpx.post(f"{url}/v1/predict", json={"instances": PIXELS.tolist()}, timeout=10)
        predictions = answer.json()["predictions"]
        expected = np.array([row["probabilities"] for row in predictions])
        flags = [row["not_a_digit"] for row in predictions]
        assert sorted(flags) == [False, False, True], flags
        yield Service(url, port, expected, flags)


def test_tritonclient_health_metadata_and_versions(service):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{service.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "v1")
    assert not client.is_model_ready("digits", "v2")  # in the registry, not served
    assert not client.is_model_ready("digits", "v9")
    metadata = client.get_model_metadata("digits", "v1")
    assert metadata["versions"] == ["v1"]
    assert {"name": "not_a_digit", "datatype": "BOOL", "shape": [-1]} in metadata["outputs"]
    config = client.get_model_config("digits")
    assert config["max_batch_size"] == 1000
    assert "TYPE_BOOL" in [output["data_type"] for output in config["output"]]
    with pytest.raises(InferenceServerException) as refused:
        client.get_inference_statistics("digits")
    assert refused.value.status() == "404" and "/metrics" in refused.value.message()


def test_tritonclient_infers_json_and_binary_tensors(service):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(f"127.0.0.1:{service.port}")
    for dtype, datatype, binary in [("uint8", "UINT8", False), ("float32", "FP32", True),
                                    ("uint8", "UINT8", True)]:
        images = triton.InferInput("images", list(PIXELS.shape), datatype)
        images.set_data_from_numpy(PIXELS.astype(dtype), binary_data=binary)
        result = client.infer("digits", [images])  # outputs in binary: the client's default
        np.testing.assert_allclose(result.as_numpy("probabilities"), service.expected,
                                   atol=1e-6)
        assert result.as_numpy("digit").tolist() == service.expected.argmax(axis=1).tolist()
        assert result.as_numpy("not_a_digit").dtype == bool
        assert result.as_numpy("not_a_digit").tolist() == service.flags
        described = result.get_response()["outputs"][0]
        assert "binary_data_size" in described["parameters"] and "data" not in described

    digit = triton.InferRequestedOutput("digit", binary_data=False)
    result = client.infer("digits", [images], model_version="v1", outputs=[digit])
    assert result.get_response()["outputs"][0]["data"] == result.as_numpy("digit").tolist()
    assert result.get_response()["model_version"] == "v1"
    flags = triton.InferRequestedOutput("not_a_digit", binary_data=False)
    result = client.infer("digits", [images], outputs=[flags])
    assert result.as_numpy("not_a_digit").tolist() == service.flags
    assert result.as_numpy("probabilities") is None  # only what was asked for
    probabilities = triton.InferRequestedOutput("probabilities")
    result = client.infer("digits", [images], outputs=[probabilities])
    assert [output["name"] for output in result.get_response()["outputs"]] == ["probabilities"]
    assert result.as_numpy("not_a_digit") is None
    with pytest.raises(InferenceServerException) as refused:
        client.infer("digits", [images], request_compression_algorithm="gzip")
    assert refused.value.status() == "415" and "gzip" in refused.value.message()


def test_mlflows_client_scores_arrays_frames_and_named_tensors(service):
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", service.port)
    client.wait_server_ready(timeout=5)
    frame = pd.DataFrame(PIXELS.reshape(3, 784), columns=[f"pixel{i}" for i in range(784)])
    for data, params in [(PIXELS, None), (frame, None), ({"images": PIXELS}, None),
                         (PIXELS, {"temperature": 1})]:
        response = client.invoke(data, params)
        predictions = response.get_predictions(predictions_format="ndarray")
        np.testing.assert_allclose(predictions, service.expected, atol=1e-6)
        assert response["not_a_digit"] == service.flags  # beside the predictions
    frame = client.invoke(PIXELS).get_predictions()  # MLflow's default: a DataFrame
    assert frame.shape == (3, 10)  # the probabilities' columns, as before the flags
    assert client.get_version()[0].isdigit()
    assert httpx.get(f"{service.url}/health", timeout=5).status_code == 200


def test_a_tf_serving_rest_request(service):
    predict = f"{service.url}/v1/models/digits:predict"
    rows = httpx.post(predict, json={"instances": PIXELS.tolist()}, timeout=10)
    columns = httpx.post(predict, json={"inputs": {"images": PIXELS.tolist()}}, timeout=10)
    np.testing.assert_allclose(rows.json()["predictions"], service.expected, atol=1e-6)
    np.testing.assert_allclose(columns.json()["outputs"], service.expected, atol=1e-6)
    status = httpx.get(f"{service.url}/v1/models/digits", timeout=5).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = httpx.get(f"{service.url}/v1/models/digits/metadata", timeout=5).json()
    assert metadata["model_spec"]["version"] == "1"
    wrong = httpx.post(predict, json={"instances": [[0] * 3]}, timeout=5)
    assert wrong.status_code == 400 and list(wrong.json()) == ["error"]
