"""GET /metrics (docs/architecture.md, "The HTTP service"): Prometheus text from a registry
of the app's own, on stand-in models (no Keras: the numbers are known)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from digits.errors import RegistryError
from digits.registry.load import Predictor
from digits.registry.store import Registry
from digits.serving.app import Limits, create_app
from digits.serving.holder import ModelHolder
from tests.helpers.manifests import make_manifest
from tests.helpers.serving import mnist_like, wait_until

LOCAL_URL = "http://127.0.0.1:8000"
POLL_S = 0.05
FOLLOW_S = 5.0
# The stand-in's answer to every image: a 3, with probability 0.91.
THREE = np.full(10, 0.01, dtype=np.float32)
THREE[3] = 0.91


def stand_in(version: str, registry: Registry) -> Predictor:
    if registry.manifest(version)["model"] == "broken":
        raise RegistryError(f"{version}: does not load")
    return Predictor(version, "production", "onnx", lambda batch: np.tile(THREE, (len(batch), 1)))


def publish(registry: Registry, source: Path, model: str = "cnn", alias: str | None = "production"):
    return registry.publish(source, {**make_manifest(), "model": model}, alias=alias)


@pytest.fixture
def registry(tmp_path, source) -> Registry:
    registry = Registry(tmp_path / "registry")
    publish(registry, source)
    return registry


@contextmanager
def serving(registry: Registry, ready: bool = True, **kwargs):
    app = create_app(registry, poll_s=POLL_S, open_model=stand_in, **kwargs)
    with TestClient(app, base_url=LOCAL_URL) as client:
        if ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, "the first model")
        yield client


@pytest.fixture
def client(registry):
    with serving(registry) as client:
        yield client




def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, from the Prometheus text."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def predict(client: TestClient, n: int = 1, **kwargs):
    return client.post("/v1/predict", json={"instances": mnist_like(n).tolist()}, **kwargs)


def test_metrics_are_prometheus_text(client):
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE digits_http_requests_total counter" in answer.text


def test_requests_are_counted_by_route_template_and_status(client):
    assert client.get("/v1/registry/versions/v1").status_code == 200
    assert client.get("/v1/registry/versions/v9").status_code == 404
    assert predict(client).status_code == 200
    assert client.get("/nope/12345").status_code == 404
    samples = scrape(client)
    requests = "digits_http_requests_total"
    route = "/v1/registry/versions/{ref}"
    assert value(samples, requests, route=route, status="200") == 1
    assert value(samples, requests, route=route, status="404") == 1
    assert value(samples, requests, route="/v1/predict", status="200") == 1
    assert value(samples, requests, route="unmatched", status="404") == 1
    assert value(samples, "digits_http_request_duration_seconds_count", route="/v1/predict") == 1
    # Labels stay bounded: never a raw path, a version or a ref a client typed.
    labels = {v for _, pairs in samples for _, v in pairs}
    assert not labels & {"/nope/12345", "/v1/registry/versions/v9", "v9"}


def test_requests_refused_before_routing_are_counted_under_their_route(registry):
    with serving(registry, limits=Limits(max_body_bytes=100)) as client:
        assert predict(client, headers={"origin": "http://evil.example"}).status_code == 403
        assert client.get("/v1/registry/versions", headers={"host": "evil.example"}
                          ).status_code == 400
        assert predict(client).status_code == 413  # by its Content-Length
        samples = scrape(client)
    requests = "digits_http_requests_total"
    assert value(samples, requests, route="/v1/predict", status="403") == 1
    assert value(samples, requests, route="/v1/predict", status="413") == 1
    assert value(samples, requests, route="/v1/registry/versions", status="400") == 1


def test_predictions_by_digit_and_version_and_the_confidence_histogram(client):
    assert predict(client, 3).status_code == 200
    samples = scrape(client)
    assert value(samples, "digits_predictions_total", version="v1", digit="3") == 3
    assert value(samples, "digits_predictions_total", version="v1", digit="4") is None
    confidence = "digits_prediction_confidence"
    assert value(samples, f"{confidence}_count", version="v1") == 3
    assert value(samples, f"{confidence}_sum", version="v1") == pytest.approx(3 * 0.91)
    assert value(samples, f"{confidence}_bucket", version="v1", le="0.9") == 0
    assert value(samples, f"{confidence}_bucket", version="v1", le="0.95") == 3


def test_the_loaded_version_readiness_and_alias_swaps(client, registry, source):
    samples = scrape(client)
    assert value(samples, "digits_model_ready") == 1
    info = {"version": "v1", "ref": "production", "backend": "onnx"}
    assert value(samples, "digits_model_info", **info) == 1
    assert value(samples, "digits_alias_swaps_total", outcome="success") == 1  # the first load
    assert value(samples, "digits_alias_swaps_total", outcome="failure") == 0

    publish(registry, source)
    wait_until(lambda: predict(client).json()["model"]["version"] == "v2", "v2")
    publish(registry, source, model="broken")
    wait_until(lambda: client.get("/readyz").json()["problem"], "v3's failure")
    samples = scrape(client)
    assert value(samples, "digits_model_info", **{**info, "version": "v2"}) == 1
    assert value(samples, "digits_model_info", **info) is None  # one version: the one served
    assert value(samples, "digits_alias_swaps_total", outcome="success") == 2
    assert value(samples, "digits_alias_swaps_total", outcome="failure") == 1


def test_not_ready_is_a_zero_and_no_version(tmp_path):
    with serving(Registry(tmp_path / "registry"), ready=False) as client:
        wait_until(lambda: client.get("/readyz").json()["problem"] != "loading", "a first check")
        samples = scrape(client)
    assert value(samples, "digits_model_ready") == 0
    assert not [name for name, _ in samples if name == "digits_model_info"]


def test_two_apps_in_one_process_keep_their_own_counts(registry):
    with serving(registry) as first, serving(registry) as second:
        predict(first, 2)
        assert value(scrape(first), "digits_predictions_total", version="v1", digit="3") == 2
        assert value(scrape(second), "digits_predictions_total", version="v1", digit="3") is None


def test_a_scrape_skips_the_body_limit_but_not_the_host_check(registry):
    with serving(registry, limits=Limits(max_body_bytes=10)) as client:
        body = {"content": b"x" * 100}
        assert client.request("GET", "/v1/registry/versions", **body).status_code == 413
        assert client.request("GET", "/metrics", **body).status_code == 200
        assert client.get("/metrics", headers={"host": "evil.example"}).status_code == 400
        answer = client.post("/metrics")
        assert answer.status_code == 405 and answer.json()["error"]


def test_the_holder_reports_each_swap_outcome(registry, source):
    outcomes = []
    holder = ModelHolder(registry, "production", stand_in, retry_failed_s=0,
                         on_swap=outcomes.append)
    holder.refresh()
    holder.refresh()  # the same target: no swap
    publish(registry, source, model="broken")
    holder.refresh()
    assert outcomes == ["success", "failure"]
    assert holder.loaded.predictor.version == "v1"
