"""The service's Prometheus metrics, served at GET /metrics (docs/architecture.md, "The HTTP
service").

Each app has a registry of its own (never prometheus_client's global one), so two apps in
one process count apart. Every label is bounded: routes are templates ("/v1/registry/
versions/{ref}", "unmatched" for a path no route knows), never the path a client sent;
digits are 0..9; versions are those this process served. The model in service and
readiness are read from the holder at scrape time, so they are never stale, as is the last
verdict of `digits drift` on the service's prediction log (digits.monitoring.verdict).

Under `digits serve --workers N` each worker is a process of its own: prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `digits serve` before the workers start)
keeps every value in a file per process, and a scrape sums them over the workers, whichever
worker answers it. The model gauges are then written when a worker swaps models:
digits_model_ready is 1 when every live worker has a model, digits_model_info counts the
workers serving each version.
"""

from __future__ import annotations

import collections
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.routing import BaseRoute, Match, Route

from digits.config import NUM_CLASSES
from digits.monitoring.verdict import VERDICTS, read_verdict
from digits.serving.errors import ApiError, error_response
from digits.serving.holder import SWAP_FAILURE, SWAP_SUCCESS, ModelHolder

METRICS_PATH = "/metrics"
DIGIT_LABELS = [str(digit) for digit in range(NUM_CLASSES)]
UNMATCHED = "unmatched"  # the route label of a path no route knows
# Top-class probability: fine steps near 1, where a confident model's answers lie.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
# prometheus_client reads it when it is first imported: a worker must have it from the start.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LIVE_GAUGE_FILE_RE = re.compile(r"gauge_live\w+_(\d+)\.db")
READY_HELP = "1 when a verified model is in service, else 0"
INFO_HELP = "The model in service: 1, labelled with its version"


class ServiceMetrics:
    """One app's counters and histograms, in its own registry; `log_dir`: the service's
    prediction log, whose drift verdict it shows."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.drift = DriftCollector(log_dir)
        self.registry.register(self.drift)
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
        self.not_a_digit = Counter(
            "digits_not_a_digit", "Images answered as not a digit by the served version's "
            "rule, by model version", ("version",), registry=self.registry,
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
        self.folder = multiprocess_folder()  # None: this process is the whole service
        self.holder: ModelHolder | None = None
        self._shown: tuple[str, str, str] | None = None  # the model_info labels set to 1

    def count_swap(self, outcome: str) -> None:
        self.swaps.labels(outcome).inc()
        if self.folder is not None and outcome == SWAP_SUCCESS:
            self.show_model()

    def watch(self, holder: ModelHolder) -> None:
        self.holder = holder
        if self.folder is None:
            self.registry.register(ModelCollector(holder))
            return
        # Other workers' models can only be known from their files: gauges, set on a swap.
        self.ready = Gauge(
            "digits_model_ready", f"{READY_HELP}, in every live worker",
            multiprocess_mode="livemin", registry=self.registry,
        )
        self.info = Gauge(
            "digits_model_info", "The model in service: the number of workers serving it "
            "(0: none any more), labelled with its version", ("version", "ref", "backend"),
            multiprocess_mode="livesum", registry=self.registry,
        )
        self.ready.set(0)

    def show_model(self) -> None:
        """This worker's model, after a swap, in the gauges that all workers add up."""
        predictor = self.holder.loaded.predictor
        labels = (predictor.version, self.holder.ref, predictor.backend)
        if self._shown not in (None, labels):
            self.info.labels(*self._shown).set(0)
        self.info.labels(*labels).set(1)
        self.ready.set(1)
        self._shown = labels

    def exposition(self) -> CollectorRegistry:
        """What GET /metrics renders: this registry, or every worker's files added up."""
        if self.folder is None:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.folder))
        merged.register(self.drift)  # read from the log's folder, as in one process
        return merged

    def close(self) -> None:
        """A worker leaving: its model gauges stop counting (its counters keep counting)."""
        if self.folder is not None:
            mark_process_dead(os.getpid(), str(self.folder))

    def observe(self, version: str, probabilities: np.ndarray, not_a_digit: np.ndarray) -> None:
        """One request's (N, 10) answer: the digits predicted, their probabilities and how
        many the version's rule flagged as not a digit ((N,) bool)."""
        # Counted in Python: a request holds one image or a few, for which numpy's calls
        # cost more than the loop.
        for digit, count in collections.Counter(probabilities.argmax(axis=1).tolist()).items():
            self.predictions.labels(version, DIGIT_LABELS[digit]).inc(count)
        confidence = self.confidence.labels(version)
        for top in probabilities.max(axis=1).tolist():
            confidence.observe(top)
        # The series starts at 0 with a version's first answer, so a rate over it is defined.
        self.not_a_digit.labels(version).inc(int(np.count_nonzero(not_a_digit)))


class ModelCollector:
    """digits_model_ready and digits_model_info, read from the holder when scraped."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[Metric]:
        loaded = self.holder.loaded
        yield GaugeMetricFamily("digits_model_ready", READY_HELP, value=int(loaded is not None))
        info = GaugeMetricFamily("digits_model_info", INFO_HELP, labels=("version", "ref", "backend"))
        if loaded:
            predictor = loaded.predictor
            info.add_metric([predictor.version, self.holder.ref, predictor.backend], 1)
        yield info


class DriftCollector:
    """The last verdict of `digits drift` on the prediction log in `folder`, read when
    scraped: the metrics' families without samples when there is no log or no verdict yet."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        verdict = read_verdict(self.folder) if self.folder is not None else None
        state = GaugeMetricFamily("digits_drift_verdict", "The last verdict of `digits drift` "
                                  "on the prediction log: 1 for it, 0 for the others",
                                  labels=("verdict",))
        judged = GaugeMetricFamily("digits_drift_judged_timestamp_seconds",
                                   "When `digits drift` last judged the logged traffic")
        images = GaugeMetricFamily("digits_drift_images", "Images its last verdict judged")
        if verdict is not None:
            for name in VERDICTS:
                state.add_metric([name], int(name == verdict.verdict))
            judged.add_metric([], verdict.judged_at.timestamp())
            images.add_metric([], verdict.images)
        yield from (state, judged, images)


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
        self.exposition = make_asgi_app(metrics.exposition())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != METRICS_PATH:
            await self.app(scope, receive, send)
        elif scope["method"] == "GET":
            await self.exposition(scope, receive, send)
        else:
            error = ApiError(405, f"{METRICS_PATH} answers GET only", {"Allow": "GET"})
            await error_response(error)(scope, receive, send)


def multiprocess_folder() -> Path | None:
    folder = os.environ.get(MULTIPROCESS_ENV)
    return Path(folder) if folder else None


def forget_dead_workers(folder: Path) -> None:
    """Drop the model gauges of workers that died without leaving (SIGKILL, a crash): uvicorn
    starts a replacement, which calls this, so a dead worker is never counted as serving."""
    for path in folder.glob("gauge_live*.db"):
        match = LIVE_GAUGE_FILE_RE.fullmatch(path.name)
        if match and not process_alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), str(folder))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's under a reused pid
        pass
    return True
