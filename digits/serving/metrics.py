"""The service's Prometheus metrics, served at GET /metrics (docs/architecture.md, "The HTTP
service").

Each app has a registry of its own (never prometheus_client's global one), so two apps in
one process count apart. Every label is bounded: routes are templates ("/v1/registry/
versions/{ref}", "unmatched" for a path no route knows), never the path a client sent;
digits are 0..9; versions are those this process served. The model in service and
readiness are read from the holder at scrape time, so they are never stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.routing import BaseRoute, Match, Route

from digits.config import NUM_CLASSES
from digits.serving.holder import SWAP_FAILURE, SWAP_SUCCESS, ModelHolder
from digits.serving.inputs import ApiError, error_response

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # the route label of a path no route knows
# Top-class probability: fine steps near 1, where a confident model's answers lie.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ServiceMetrics:
    """One app's counters and histograms, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "digits_http_requests", "HTTP requests answered, by route template and status",
            ("route", "status"), registry=self.registry,
        )
        self.latency = Histogram(
            "digits_http_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte, by route template",
            ("route",), registry=self.registry,
        )
        self.predictions = Counter(
            "digits_predictions", "Images classified, by model version and predicted digit",
            ("version", "digit"), registry=self.registry,
        )
        self.confidence = Histogram(
            "digits_prediction_confidence", "Top-class probability of each image classified",
            ("version",), buckets=CONFIDENCE_BUCKETS, registry=self.registry,
        )
        self.swaps = Counter(
            "digits_alias_swaps",
            "Attempts to serve the alias's new target: success (verified, warmed up, in "
            "service) or failure (the old model kept)",
            ("outcome",), registry=self.registry,
        )
        for outcome in (SWAP_SUCCESS, SWAP_FAILURE):
            self.swaps.labels(outcome)  # both series from the start, at 0

    def count_swap(self, outcome: str) -> None:
        self.swaps.labels(outcome).inc()

    def watch(self, holder: ModelHolder) -> None:
        self.registry.register(ModelCollector(holder))

    def observe(self, version: str, probabilities: np.ndarray) -> None:
        """One request's (N, 10) answer: the digits predicted and their probabilities."""
        counts = np.bincount(probabilities.argmax(axis=1), minlength=NUM_CLASSES)
        for digit in np.flatnonzero(counts):
            self.predictions.labels(version, str(digit)).inc(int(counts[digit]))
        confidence = self.confidence.labels(version)
        for top in probabilities.max(axis=1).tolist():
            confidence.observe(top)


class ModelCollector:
    """digits_model_ready and digits_model_info, read from the holder when scraped."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[Metric]:
        loaded = self.holder.loaded
        yield GaugeMetricFamily(
            "digits_model_ready", "1 when a verified model is in service, else 0",
            value=int(loaded is not None),
        )
        info = GaugeMetricFamily(
            "digits_model_info", "The model in service: 1, labelled with its version",
            labels=("version", "ref", "backend"),
        )
        if loaded:
            predictor = loaded.predictor
            info.add_metric([predictor.version, self.holder.ref, predictor.backend], 1)
        yield info


class RecordRequests:
    """ASGI middleware, outermost: every answer is counted and timed, those refused before
    any route ran too (a bad Host, a cross-site POST, a body over the limit)."""

    def __init__(self, app, metrics: ServiceMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes  # the app's own list: routes added later are seen

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope, self.routes)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)


def route_template(scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route a request reached or, refused before routing, asked for."""
    route = scope.get("route")  # set by the router
    if route is not None:
        return route.path
    if scope["path"] == METRICS_PATH:
        return METRICS_PATH
    for candidate in routes:
        if isinstance(candidate, Route) and candidate.matches(scope)[0] is not Match.NONE:
            return candidate.path
    return UNMATCHED


class MetricsEndpoint:
    """ASGI middleware answering GET /metrics (prometheus_client's exposition) inside the
    Host and origin checks but before the body limit and every route: a scrape costs one
    rendering of the registry and never waits for a decode slot."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.exposition = make_asgi_app(metrics.registry)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != METRICS_PATH:
            await self.app(scope, receive, send)
        elif scope["method"] == "GET":
            await self.exposition(scope, receive, send)
        else:
            error = ApiError(405, f"{METRICS_PATH} answers GET only", {"Allow": "GET"})
            await error_response(error)(scope, receive, send)
