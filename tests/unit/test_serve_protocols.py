"""The standard protocols beside /v1/predict (docs/architecture.md, "The HTTP service"): the
Open Inference Protocol v2 and MLflow's scoring shape, answered by the model the service
holds; and the registry's metadata under /v1/registry (/v1/models is TF Serving's now).

The stand-in model is a fixed function of the pixels (numpy only), so every protocol's
answer can be compared with /v1/predict's for the same images."""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from digits.registry.load import Predictor
from digits.registry.store import Registry
from digits.serving.app import Limits, create_app
from tests.helpers.serving import FIRST_LOAD_S, mnist_like, wait_until

LOCAL_URL = "http://127.0.0.1:8000"
POLL_S = 0.05
INFER = "/v2/models/digits/infer"
WEIGHTS = np.random.default_rng(7).normal(size=(28 * 28, 10)).astype(np.float32) / 2000


def softmax_model(batch: np.ndarray) -> np.ndarray:
    logits = batch.reshape(len(batch), -1) @ WEIGHTS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def stand_in(version: str, registry: Registry) -> Predictor:
    return Predictor(version, "production", "onnx", softmax_model)


@contextmanager
def serving(registry: Registry, ready: bool = True, **kwargs):
    app = create_app(registry, poll_s=POLL_S, open_model=stand_in, **kwargs)
    with TestClient(app, base_url=LOCAL_URL) as client:
        if ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, "the first model",
                       FIRST_LOAD_S)
        yield client


@pytest.fixture
def client(registry):
    with serving(registry) as client:
        yield client


def v1_probabilities(client: TestClient, pixels: np.ndarray) -> np.ndarray:
    answer = client.post("/v1/predict", json={"instances": pixels.tolist()})
    assert answer.status_code == 200, answer.text
    return np.array([row["probabilities"] for row in answer.json()["predictions"]])


def tensor(pixels: np.ndarray, datatype: str = "UINT8", flat: bool = True, **fields) -> dict:
    data = pixels.ravel() if flat else pixels
    data = data.tolist() if datatype == "UINT8" else data.astype(float).tolist()
    return {"name": "images", "shape": list(pixels.shape), "datatype": datatype, "data": data,
            **fields}


def raw(body: bytes, content_type: str = "application/json") -> dict:
    return {"content": body, "headers": {"content-type": content_type}}


# --- Open Inference Protocol v2 ----------------------------------------------------------


def test_oip_health_and_server_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "digits" and server["version"]
    assert server["extensions"] == ["binary_tensor_data", "model_configuration"]


def test_oip_model_metadata(client):
    assert client.get("/v2/models/digits").json() == {
        "name": "digits",
        "versions": ["v1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "digit", "datatype": "INT64", "shape": [-1]},
            {"name": "not_a_digit", "datatype": "BOOL", "shape": [-1]},
        ],
    }


@pytest.mark.parametrize("datatype, flat", [("UINT8", True), ("UINT8", False), ("FP32", True)])
def test_oip_infer_answers_what_v1_predict_answers(client, datatype, flat):
    pixels = mnist_like(3)
    body = {"id": "request-1", "inputs": [tensor(pixels, datatype, flat)]}
    answer = client.post(INFER, json=body)
    assert answer.status_code == 200, answer.text
    expected = v1_probabilities(client, pixels)
    got = answer.json()
    assert {key: got[key] for key in ("id", "model_name", "model_version")} == {
        "id": "request-1", "model_name": "digits", "model_version": "v1"}
    probabilities, digit, not_a_digit = got["outputs"]
    assert {k: v for k, v in probabilities.items() if k != "data"} == {
        "name": "probabilities", "shape": [3, 10], "datatype": "FP32"}
    np.testing.assert_allclose(np.reshape(probabilities["data"], (3, 10)), expected, atol=1e-7)
    assert digit == {"name": "digit", "shape": [3], "datatype": "INT64",
                     "data": expected.argmax(axis=1).tolist()}
    # The stand-in's version has no rule (published before it): nothing is flagged.
    assert not_a_digit == {"name": "not_a_digit", "shape": [3], "datatype": "BOOL",
                           "data": [False] * 3}


def test_oip_infer_answers_only_the_outputs_asked_for(client):
    body = {"inputs": [tensor(mnist_like(2))], "outputs": [{"name": "digit"}]}
    answer = client.post(INFER, json=body)
    assert answer.status_code == 200, answer.text
    assert [output["name"] for output in answer.json()["outputs"]] == ["digit"]
    assert "id" not in answer.json()


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/v2/models/mnist"), ("POST", "/v2/models/mnist/infer"),
     ("GET", "/v2/models/mnist/ready")],
)
def test_oip_another_model_name_is_404(client, method, path):
    answer = client.request(method, path, json={"inputs": [tensor(mnist_like(1))]})
    assert answer.status_code == 404 and "'mnist'" in answer.json()["error"]


def with_tensor(**fields) -> dict:
    """An infer body whose one tensor has `fields` changed (None: left out)."""
    base = tensor(mnist_like(1))
    changed = {**base, **fields}
    return {"json": {"inputs": [{k: v for k, v in changed.items() if v is not None}]}}


ZEROS = [0] * 784
NAN_BODY = json.dumps({"inputs": [tensor(mnist_like(1))]}).replace("[", "[NaN, ", 2).encode()


def infinite_pixel() -> bytes:
    image = tensor(mnist_like(1), "FP32")
    image["data"][0] = 12345.5  # a placeholder for a number Python's json cannot write
    return json.dumps({"inputs": [image]}).replace("12345.5", "1e999").encode()


BAD_INFER = {
    "not JSON": (raw(b"{nope"), "not valid JSON"),
    "NaN": (raw(NAN_BODY), "not valid JSON"),  # NaN is no JSON number
    "a list body": ({"json": [1]}, '"inputs"'),
    "no inputs": ({"json": {"outputs": []}}, '"inputs"'),
    "two inputs": ({"json": {"inputs": [tensor(mnist_like(1))] * 2}}, "one tensor"),
    "a tensor that is not an object": ({"json": {"inputs": [ZEROS]}}, "an object"),
    "no data": (with_tensor(data=None), 'no "data"'),
    "a name that is not a string": (with_tensor(name=3), '"name" must be a string'),
    "a datatype that is no number": (with_tensor(datatype="BYTES"), "numeric one"),
    "a datatype that is a list": (with_tensor(datatype=["FP32"]), "numeric one"),
    "a wrong shape": (with_tensor(shape=[1, 28, 27]), "[N, 28, 28]"),
    "a shape of strings": (with_tensor(shape=["1", 28, 28]), "[N, 28, 28]"),
    "no images": (with_tensor(shape=[0, 28, 28], data=[]), "N >= 1"),
    "data of another size": (with_tensor(shape=[2, 28, 28]), "784 values"),
    "ragged data": (with_tensor(data=[[0] * 28] * 27 + [[0] * 3]), "list of numbers"),
    "strings": (with_tensor(data=["0"] * 784), "numbers"),
    "nulls": (with_tensor(data=[None] * 784), "numbers"),
    "booleans": (with_tensor(data=[True] * 784), "numbers"),
    "a boolean among numbers": (with_tensor(data=[True] + [0] * 783), "true or false"),
    "a boolean among FP32 data": (
        with_tensor(datatype="FP32", data=[0.5] * 783 + [False]), "true or false"),
    "nested booleans among numbers": (
        with_tensor(data=[[[0] * 27 + [True]] * 28]), "true or false"),
    "fractions as UINT8": (with_tensor(data=[0.5] * 784), "must be integers"),
    "fractions as INT64": (with_tensor(datatype="INT64", data=[0.5] * 784), "must be integers"),
    "a value over 255": (with_tensor(data=[256] * 784), "0..255"),
    "a negative value": (with_tensor(data=[-1] * 784), "0..255"),
    "an infinite number": (raw(infinite_pixel()), "number is infinity"),
    "an unknown output": (
        {"json": {"inputs": [tensor(mnist_like(1))], "outputs": [{"name": "logits"}]}},
        "unknown output 'logits'",
    ),
    "an id that is not a string": ({"json": {"id": 5, "inputs": [tensor(mnist_like(1))]}}, '"id"'),
}


@pytest.mark.parametrize("case", sorted(BAD_INFER))
def test_oip_bad_input_is_a_400_naming_it(client, case):
    request, message = BAD_INFER[case]
    answer = client.post(INFER, **request)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


# --- MLflow's scoring server shape -------------------------------------------------------


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_invocations_answer_mlflow_predictions(client, key):
    pixels = mnist_like(3)
    answer = client.post("/invocations", json={key: pixels.tolist()})
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["predictions", "not_a_digit"]
    assert answer.json()["not_a_digit"] == [False] * 3  # a version without a rule
    np.testing.assert_allclose(answer.json()["predictions"], v1_probabilities(client, pixels),
                               atol=1e-7)


def test_ping_when_ready(client):
    assert client.get("/ping").status_code == 200


ONE = mnist_like(1).tolist()
BAD_INVOCATIONS = {
    "not JSON": (raw(b"[1,"), "not valid JSON"),
    "NaN": (raw(b'{"instances": [NaN]}'), "not valid JSON"),
    "a list body": ({"json": ONE}, "an object with one of"),
    "neither key": ({"json": {"data": ONE}}, "exactly one of"),
    "both keys": ({"json": {"instances": ONE, "inputs": ONE}}, "exactly one of"),
    "params alone": ({"json": {"params": {}}}, "exactly one of"),
    "params not an object": ({"json": {"inputs": ONE, "params": [1]}}, '"params" must be'),
    "a data frame of no rows": ({"json": {"dataframe_split": {"data": []}}}, "no rows"),
    "two named tensors": ({"json": {"inputs": {"a": ONE, "b": ONE}}}, "must name one input"),
    "empty": ({"json": {"instances": []}}, "non-empty list"),
    "one image, not a list": ({"json": {"inputs": ONE[0]}}, "got shape (28, 28)"),
    "a wrong shape": ({"json": {"inputs": np.zeros((1, 28, 27)).tolist()}},
                      "got shape (1, 28, 27)"),
    "strings": ({"json": {"instances": [[["0"] * 28] * 28]}}, "numbers"),
    "a value over 255": ({"json": {"instances": [[[300] * 28] * 28]}}, "0..255"),
    "a negative value": ({"json": {"inputs": [[[-1] * 28] * 28]}}, "0..255"),
    "a boolean among numbers": ({"json": {"instances": [[[True] + [0] * 27] * 28]}},
                                "true or false"),
}


@pytest.mark.parametrize("case", sorted(BAD_INVOCATIONS))
def test_invocations_bad_input_is_a_400_naming_it(client, case):
    request, message = BAD_INVOCATIONS[case]
    answer = client.post("/invocations", **request)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


# --- what every prediction route shares -----------------------------------------------------

PREDICT = "/v1/models/digits:predict"
POSTS = {INFER: {"inputs": [tensor(mnist_like(1))]}, "/invocations": {"instances": ONE},
         PREDICT: {"instances": ONE}}


@pytest.mark.parametrize("path", sorted(POSTS))
def test_protocol_posts_keep_the_limits_of_v1_predict(registry, path):
    with serving(registry, limits=Limits(max_body_bytes=1000)) as client:
        answer = client.post(path, json=POSTS[path])
        assert answer.status_code == 413 and "1000 bytes" in answer.json()["error"]
        answer = client.post(path, **raw(b"7", "text/plain"))
        assert answer.status_code == 415 and "application/json" in answer.json()["error"]
        answer = client.post(path, **raw(b""))
        assert answer.status_code == 400 and "empty" in answer.json()["error"]
        answer = client.post(path, json={}, headers={"origin": "http://evil.example"})
        assert answer.status_code == 403 and "cross-site" in answer.json()["error"]
        answer = client.post(path, json={}, headers={"host": "evil.example"})
        assert answer.status_code == 400 and "Invalid host header" in answer.json()["error"]


@pytest.mark.parametrize("path", sorted(POSTS))
def test_protocol_posts_wait_for_the_same_decode_slots(registry, path):
    """/v1/predict holds the only decode slot from its first body byte: a protocol request
    waits for it, then gets the same 503 with Retry-After."""
    app = create_app(registry, limits=Limits(max_decodes=1, decode_wait_s=0.2),
                     open_model=stand_in)
    app.state.holder.refresh()  # ASGITransport runs no lifespan: load the model here
    body = json.dumps({"instances": ONE}).encode()
    json_type = {"content-type": "application/json"}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        release = asyncio.Event()

        async def slow_body():
            yield body[:10]
            await release.wait()
            yield body[10:]

        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL_URL) as client:
            first = asyncio.create_task(
                client.post("/v1/predict", content=slow_body(), headers=json_type)
            )
            await asyncio.sleep(0.1)
            second = await client.post(path, json=POSTS[path])
            release.set()
            return await first, second

    first, second = asyncio.run(scenario())
    assert first.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert "busy" in second.json()["error"]


def test_protocol_posts_keep_the_cap_on_images_per_request(registry):
    pixels = mnist_like(4)
    with serving(registry, limits=Limits(max_images=3)) as client:
        for path, body in [(INFER, {"inputs": [tensor(pixels)]}),
                           (INFER, {"inputs": [tensor(pixels, flat=False)]}),
                           ("/invocations", {"instances": pixels.tolist()}),
                           ("/invocations", {"inputs": pixels.tolist()})]:
            answer = client.post(path, json=body)
            assert answer.status_code == 413, (path, answer.text)
            assert "4 images: over the limit of 3 images per request" in answer.json()["error"]
        assert client.post(INFER, json={"inputs": [tensor(pixels[:3])]}).status_code == 200


# The JSON flood: 2 MB of empty lists took /healthz from 4 ms to 0.7 s, ~0.3 s of
# parsing each.
EMPTY_LISTS = b'{"instances": [' + b"[], " * 499_990 + b"[]]}"
JSON_POSTS = {
    "/v1/predict": {"instances": ONE},
    "/invocations": {"instances": ONE},
    INFER: {"inputs": [tensor(mnist_like(1))]},
    PREDICT: {"instances": ONE},
    "/v1/feedback": {"id": "0" * 32, "label": 3},
}


def test_a_json_body_of_more_lists_than_the_images_need_is_refused_unparsed(
        registry, tmp_path, monkeypatch):
    from digits.serving import documents

    def unparsed(body):
        raise AssertionError("parsed")  # a 500, if any route parsed the body

    monkeypatch.setattr(documents, "orjson", SimpleNamespace(loads=unparsed,
                                                          JSONDecodeError=ValueError))
    with serving(registry, log_dir=tmp_path / "log") as client:
        for path in JSON_POSTS:
            answer = client.post(path, **raw(EMPTY_LISTS))
            assert answer.status_code == 413, (path, answer.text)
            assert answer.json()["error"], path


def test_every_json_route_parses_within_a_decode_slot(registry, tmp_path):
    """With the only slot taken, each JSON route waits for it, then gets 503 + Retry-After;
    once it is free they answer (the feedback's id is unknown: a 404, past its parse)."""
    app = create_app(registry, limits=Limits(max_decodes=1, decode_wait_s=0.2),
                     open_model=stand_in, log_dir=tmp_path / "log")
    app.state.holder.refresh()  # ASGITransport runs no lifespan: load the model here
    slots = app.state.scorer.slots

    async def scenario() -> dict[str, tuple[int, int]]:
        transport = httpx.ASGITransport(app)
        statuses = {}
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL_URL) as client:
            for path, body in JSON_POSTS.items():
                await slots.semaphore.acquire()
                busy = await client.post(path, json=body)
                assert busy.headers.get("retry-after") == "1", (path, busy.text)
                assert "busy" in busy.json()["error"], path
                slots.semaphore.release()
                statuses[path] = (busy.status_code, (await client.post(path, json=body)).status_code)
        return statuses

    statuses = asyncio.run(scenario())
    assert statuses == {path: (503, 404 if path == "/v1/feedback" else 200) for path in JSON_POSTS}


def test_not_ready_until_a_model_is_loaded(tmp_path):
    with serving(Registry(tmp_path / "registry"), ready=False) as client:
        assert client.get("/v2/health/live").status_code == 200
        for method, path, body in [
            ("GET", "/v2/health/ready", None), ("GET", "/v2/models/digits/ready", None),
            ("GET", "/v2/models/digits", None), ("GET", "/ping", None), ("GET", "/health", None),
            ("GET", "/v2/models/digits/versions/v1/ready", None),
            ("GET", "/v1/models/digits", None), ("GET", "/v1/models/digits/metadata", None),
            ("POST", INFER, POSTS[INFER]), ("POST", "/invocations", POSTS["/invocations"]),
            ("POST", PREDICT, POSTS[PREDICT]),
        ]:
            answer = client.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert "no verified model" in answer.json()["error"], path


# --- the registry's metadata -------------------------------------------------------------

OLD_PATHS = ["/v1/models", "/v1/models/production", "/v1/models/v1",
             "/v1/models/v1/files/card.md", "/v1/models/v9"]


@pytest.mark.parametrize("old", OLD_PATHS)
def test_the_old_registry_paths_are_gone_and_say_where_it_went(client, old):
    """A contract change (issue 29): /v1/models/{name} is TF Serving's model status now."""
    answer = client.get(old)
    assert answer.status_code == 404, answer.text
    if old != "/v1/models" and "/files/" not in old:
        assert "/v1/registry/versions" in answer.json()["error"]


def test_registry_versions_are_the_manifests(client, registry):
    assert client.get("/v1/registry/versions/production").json() == registry.manifest("v1")
    listed = client.get("/v1/registry/versions").json()
    assert [entry["version"] for entry in listed] == ["v1"] and "path" not in listed[0]


def test_the_page_reads_the_registry_from_its_new_paths(client):
    script = client.get("/static/app.js").text
    assert "/v1/registry/versions" in script and "/v1/models" not in script


def test_still_read_only(client):
    for path in ("/v1/registry/versions", "/v1/registry/versions/production",
                 "/v1/registry/versions/v1/promote"):
        assert client.post(path).status_code in (404, 405), path
