"""CORS by allow-list (`digits serve --cors-origin`; docs/architecture.md, "The HTTP
service"): the allowed origins' pages get their preflights answered, Access-Control-* on
every answer and their writes taken; every other site's page is refused as before, and
without the option nothing changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digits.registry.load import Predictor
from digits.registry.store import Registry
from digits.serving.settings import Limits, ServeSettings, check_origin
from tests.helpers.serving import mnist_like
from tests.helpers.serving import serving as serve_app

APP = "https://app.example"  # the web app the operator allowed
OTHER = "https://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type, authorization"}


def stand_in(version: str, registry: Registry) -> Predictor:
    return Predictor(version, "production", "onnx", lambda batch: np.full((len(batch), 10), 0.1))


def serving(registry: Registry, **kwargs):
    return serve_app(registry, open_model=stand_in, **kwargs)


@pytest.fixture
def allowing(registry):
    with serving(registry, cors_origins=[APP]) as client:
        yield client


def predict(client: TestClient, origin: str):
    # What a browser sends with a page's fetch() to another origin.
    headers = {"Origin": origin, "Sec-Fetch-Site": "cross-site"}
    return client.post("/v1/predict", json={"instances": mnist_like(1).tolist()}, headers=headers)


def test_an_allowed_origin_gets_its_preflight_answered_and_its_write_taken(allowing):
    preflight = allowing.options("/v1/predict", headers={"Origin": APP, **PREFLIGHT})
    answer = predict(allowing, APP)

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
    assert set(preflight.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == APP
    assert "X-Request-ID" in answer.headers["access-control-expose-headers"]


def test_an_allowed_origin_reads_the_refusals_too(allowing):
    answer = allowing.post("/v1/predict", content=b"[", headers={
        "Origin": APP, "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.headers["access-control-allow-origin"] == APP


def binary_infer(client: TestClient, headers: dict[str, str]):
    """An OIP request in the binary tensor data extension, outputs in binary, as
    tritonclient sends it by default: no Content-Type, no Origin."""
    pixels = mnist_like(2).astype(np.uint8).tobytes()
    header = json.dumps({"inputs": [{"name": "images", "shape": [2, 28, 28], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": len(pixels)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return client.post("/v2/models/digits/infer", content=header + pixels,
                       headers={"Inference-Header-Content-Length": str(len(header)), **headers})


def test_oip_binary_tensors_pass_the_guards_from_a_client_and_an_allowed_page(allowing):
    preflight = allowing.options("/v2/models/digits/infer", headers={
        "Origin": APP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, inference-header-content-length"})
    client = binary_infer(allowing, {})
    page = binary_infer(allowing, {"Origin": APP, "Sec-Fetch-Site": "cross-site",
                                   "Content-Type": "application/octet-stream"})
    other = binary_infer(allowing, {"Origin": OTHER, "Sec-Fetch-Site": "cross-site"})

    assert preflight.status_code == 200, preflight.text
    for answer in (client, page):
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/octet-stream"
        length = int(answer.headers["inference-header-content-length"])
        # FP32 [2, 10], INT64 [2], BOOL [2]
        assert len(answer.content) == length + 2 * 10 * 4 + 2 * 8 + 2
    assert "access-control-allow-origin" not in client.headers
    assert "Inference-Header-Content-Length" in page.headers["access-control-expose-headers"]
    assert other.status_code == 403


def test_another_origin_is_refused_its_preflight_as_json_and_its_write(allowing):
    preflight = allowing.options("/v1/predict", headers={"Origin": OTHER, **PREFLIGHT})
    answer = predict(allowing, OTHER)

    assert preflight.status_code == 400
    assert preflight.json() == {"error": "CORS preflight refused (origin): this service allows "
                                         f"{APP}, methods GET, POST"}
    assert "access-control-allow-origin" not in preflight.headers
    assert answer.status_code == 403 and "cross-site" in answer.json()["error"]
    assert "access-control-allow-origin" not in answer.headers


def test_an_allowed_origin_may_not_use_another_method(allowing):
    preflight = allowing.options("/v1/predict", headers={
        "Origin": APP, "Access-Control-Request-Method": "DELETE"})
    assert preflight.status_code == 400 and "(method)" in preflight.json()["error"]


def test_without_allowed_origins_no_page_of_another_site_is_answered(registry):
    with serving(registry) as client:
        preflight = client.options("/v1/predict", headers={"Origin": APP, **PREFLIGHT})
        answer = predict(client, APP)
        read = client.get("/readyz", headers={"Origin": APP})

    assert preflight.status_code == 405
    assert answer.status_code == 403
    assert not any(name.startswith("access-control-") for name in
                   [*preflight.headers, *answer.headers, *read.headers])


@pytest.mark.parametrize("text, origin", [
    ("https://app.example", "https://app.example"),
    ("HTTP://App.Example:8080", "http://app.example:8080"),
    ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
])
def test_an_origin_is_kept_as_a_browser_sends_it(text, origin):
    assert check_origin(text) == origin


@pytest.mark.parametrize("text", ["*", "app.example", "https://app.example/",
                                  "https://app.example/page", "ftp://app.example",
                                  "https://app.example:99999", "https://user@app.example",
                                  "https://"])
def test_anything_but_an_origin_is_refused(text):
    with pytest.raises(ValueError, match="is not an origin"):
        check_origin(text)


def test_the_workers_get_the_allowed_origins():
    settings = ServeSettings("registry", "production", "127.0.0.1", Limits(),
                             cors_origins=(APP, "http://localhost:3000"))
    assert ServeSettings.from_json(settings.to_json()) == settings


def test_serve_refuses_a_wildcard_origin_before_starting(cli):
    code, _, err = cli("serve", "--cors-origin", "*")
    assert code == 2 and "'*' is not an origin" in err
