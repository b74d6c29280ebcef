"""The HTTP service behind `digits serve`: predictions, the registry read-only, a web page.

A library module: it imports FastAPI but never Prefect or Great Expectations, and the model
runtime (Keras or onnxruntime) loads only when a model does. Contract (docs/architecture.md,
"The HTTP service"):

- The service serves the version its ref (an alias, usually `production`) points at and
  follows it (digits.serving.holder): a target that fails keeps the old model in service.
- Bad input is a 4xx `{"error": "..."}` naming the problem, never a 500 (digits.serving.inputs
  decodes it, a few requests at a time). Request paths and parameters never name a file:
  refs go through the registry's ref check, and the only version files served are the card
  and plots that the version's manifest lists. Answers never name the server's files either.
- Only the service's own page, the origins the operator allowed (CORS) and non-browser
  clients may write: another site's page in the operator's browser is refused by Origin /
  Sec-Fetch-Site, a DNS-rebinding one by Host.
- GET /openapi.json declares every body and every status a route answers
  (digits.serving.openapi).
- Beside /v1/predict, the Open Inference Protocol v2, MLflow's scoring protocol and TF
  Serving's REST API answer with the same model (digits.serving.protocols); GET /metrics is
  Prometheus text (digits.serving.metrics).
- With a log folder, every image answered is logged with an id (digits.monitoring),
  and POST /v1/feedback takes a person's label for it (digits.serving.feedback): trusted
  with an operator's bearer token (the folder's tokens.json), else a suggestion.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from digits.config import PRODUCTION_ALIAS
from digits.monitoring.log import LogLimits, PredictionLog
from digits.monitoring.tokens import TokenCheck
from digits.registry.aliases import check_ref
from digits.registry.load import Predictor
from digits.registry.location import AnyRegistry, open_registry
from digits.serving.errors import ApiError, error_response
from digits.serving.feedback import add_feedback_route
from digits.serving.guards import Cors, HostCheck, SameOrigin
from digits.serving.holder import ModelHolder, load_for_serving
from digits.serving.inputs import BodyLimit, DecodeSlots, read_batch
from digits.serving.metrics import (
    MetricsEndpoint,
    RecordRequests,
    ServiceMetrics,
)
from digits.serving.openapi import body, describe, errors, texts
from digits.serving.protocols import add_protocol_routes
from digits.serving.registry_routes import add_registry_routes
from digits.serving.schemas import PREDICT_BODY, PREDICT_OK, READY_RESPONSES
from digits.serving.scorer import Answer, Scorer
from digits.serving.settings import (
    CORS_MAX_AGE_S,
    DEFAULT_POLL_S,
    LOOPBACK_HOSTS,
    Limits,
)

# The page's assets, read once from the package; a request picks one by name, never by path.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    # Everything comes from this server: the page works offline and loads nothing else.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
    "X-Content-Type-Options": "nosniff",
}

log = logging.getLogger(__name__)


# --- the app --------------------------------------------------------------------------


def create_app(
    registry: AnyRegistry | Path | str,
    ref: str = PRODUCTION_ALIAS,
    limits: Limits = Limits(),
    poll_s: float = DEFAULT_POLL_S,
    open_model: Callable[[str, AnyRegistry], Predictor] = load_for_serving,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
    log_dir: Path | str | None = None,
    log_limits: LogLimits = LogLimits(),
    cors_origins: Sequence[str] = (),
) -> FastAPI:
    """The service for `ref` in `registry`, answering Host headers `hosts` ("*": any), and
    browser pages of `cors_origins` besides its own; the alias follower runs while the app
    does. With `log_dir`, every image answered is logged there (a DataError at once if it is
    a folder of something else)."""
    check_ref(ref)
    registry = open_registry(registry)
    metrics = ServiceMetrics(Path(log_dir) if log_dir is not None else None)
    holder = ModelHolder(registry, ref, open_model, on_swap=metrics.count_swap)
    metrics.watch(holder)
    prediction_log = PredictionLog(Path(log_dir), log_limits) if log_dir is not None else None
    tokens = TokenCheck(Path(log_dir)) if log_dir is not None else None
    scorer = Scorer(holder, DecodeSlots(limits), metrics, prediction_log)
    assets = read_assets()

    async def lifespan(app: FastAPI):
        holder.start(poll_s)
        try:
            yield
        finally:
            holder.stop()
            metrics.close()
            if prediction_log is not None:
                prediction_log.close()

    app = FastAPI(
        title="digits",
        summary="MNIST digit predictions from the model registry",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's docs page loads Swagger UI from a CDN: not offline
        redoc_url=None,
    )
    app.openapi = describe(app)
    app.state.holder = holder
    app.state.scorer = scorer  # the benchmarks time its work alone
    add_error_handlers(app)
    # The last added runs first: the metrics' count, Host, CORS (preflights answered, allowed
    # origins named in every answer, refusals too), the origin of a write, a scrape of
    # /metrics, then the body's size.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsEndpoint, metrics=metrics)
    app.add_middleware(SameOrigin, allowed_origins=cors_origins)
    if cors_origins:
        app.add_middleware(Cors, allowed_origins=cors_origins, max_age=CORS_MAX_AGE_S)
    app.add_middleware(HostCheck, allowed_hosts=hosts)
    app.add_middleware(RecordRequests, metrics=metrics, routes=app.router.routes)
    add_protocol_routes(app, scorer)
    add_registry_routes(app, registry)
    add_feedback_route(app, prediction_log, tokens, scorer.slots)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses=READY_RESPONSES)
    def readyz() -> JSONResponse:
        status = holder.status()
        # "log": whether answers carry ids that /v1/feedback takes (the page's buttons).
        return JSONResponse({**status, "log": prediction_log is not None},
                            status_code=200 if status["ready"] else 503)

    @app.post("/v1/predict", responses={200: PREDICT_OK, **errors(400, 413, 415, 422, 503)},
              openapi_extra=body(PREDICT_BODY, "images as files, or pixel arrays as JSON"))
    async def predict(request: Request, response: Response) -> dict:
        loaded = scorer.loaded()
        async with scorer.slots:
            batch = await read_batch(request, limits)
        answer = await scorer.answer(loaded, batch)
        response.headers.update(answer.headers())
        return {
            "model": {"version": loaded.predictor.version, "ref": holder.ref},
            "predictions": classify(answer),
        }

    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        return asset_response(assets, "index.html")

    @app.get("/static/{name}", response_class=Response,
             responses={200: {"content": texts(*ASSETS.values())}, **errors(404)})
    def static(name: str) -> Response:
        return asset_response(assets, name)

    return app


def classify(answer: Answer) -> list[dict[str, Any]]:
    """Each image's answer, flagged or not as not a digit; with its log id when the service
    logged it."""
    rows = [
        {"digit": int(row.argmax()), "probabilities": [float(p) for p in row],
         "not_a_digit": flag}
        for row, flag in zip(np.asarray(answer.probabilities, dtype=np.float64),
                             answer.not_a_digit.tolist())
    ]
    for row, id_ in zip(rows, answer.ids or ()):
        row["id"] = id_
    return rows


def read_assets() -> dict[str, bytes]:
    folder = resources.files("digits.serving") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def asset_response(assets: dict[str, bytes], name: str) -> Response:
    if name not in assets:
        raise ApiError(404, f"no asset {name!r}")
    return Response(assets[name], media_type=ASSETS[name], headers=PAGE_HEADERS)


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON {"error": ...}; only a bug in this service is a 500."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own: unknown route (404), wrong method (405), malformed multipart (400).
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, 500)
