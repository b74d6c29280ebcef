"""The standard prediction protocols beside /v1/predict, answered by the same model.

- The Open Inference Protocol v2 (KServe, Triton, Seldon clients): health, server and model
  metadata, and `POST /v2/models/digits/infer` with one UINT8 or FP32 tensor [N, 28, 28].
- MLflow's scoring server: `POST /invocations` with {"instances": ...} or {"inputs": ...},
  answered {"predictions": [[10 probabilities], ...]}, and `GET /ping`.

Every prediction route, /v1/predict too, goes through one `Scorer`: the verified model the
holder has in service (503 until there is one), a decode slot while its body is read and
parsed, the metrics, and the prediction log when the service keeps one (each answer's ids
in the `X-Request-ID` header: the first image's). Bad content is a 400 {"error": ...} naming it, as OIP asks; the
transport's refusals (403, 413, 415, 503) are the service's own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.data.images import BATCH_SHAPE
from digits.monitoring.log import PredictionLog
from digits.serving.documents import check_count, parse_json, pixel_array
from digits.serving.errors import ApiError
from digits.serving.holder import Loaded, ModelHolder
from digits.serving.inputs import DecodeSlots
from digits.serving.metrics import ServiceMetrics
from digits.serving.openapi import INFER_BODY, INVOCATIONS_BODY, errors, json_body

MODEL_NAME = "digits"  # the one model name OIP clients address
DATATYPES = ("UINT8", "FP32")  # the input datatypes infer accepts
OUTPUTS = ("probabilities", "digit")
PLATFORMS = {"onnx": "onnxruntime_onnx", "keras": "keras"}  # OIP's platform, per backend
MLFLOW_KEYS = ("instances", "inputs")
INLINE_IMAGES = 4  # batches this small are scored on the event loop (Scorer.answer)
REQUEST_ID_HEADER = "X-Request-ID"  # the first image's id; the body of /v1/predict has each

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    probabilities: np.ndarray  # (N, 10) float32
    ids: list[str] | None  # the log's id of each image; None without a log (or if it failed)

    def headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.ids[0]} if self.ids else {}


@dataclass(frozen=True)
class Scorer:
    """What every prediction route shares: the model in service, the decode slots, the
    metrics and the prediction log (None: the service keeps none)."""

    holder: ModelHolder
    slots: DecodeSlots
    metrics: ServiceMetrics
    log: PredictionLog | None = field(default=None)

    def loaded(self) -> Loaded:
        """One model for the whole request, whatever the alias follower does meanwhile."""
        loaded = self.holder.loaded
        if loaded is None:
            raise ApiError(503, f"no verified model loaded yet ({self.holder.public_problem()})")
        return loaded

    async def read_json(self, request: Request, parse: Callable[[Any, int], T]) -> T:
        """The JSON body, read and parsed by `parse` (with the images-per-request limit)
        within a decode slot, as /v1/predict's, in the thread pool."""
        check_json(request)
        max_images = self.slots.limits.max_images
        async with self.slots:
            body = await read_body(request)
            return await run_in_threadpool(lambda: parse(parse_json(body, max_images), max_images))

    async def score(self, loaded: Loaded, batch: np.ndarray) -> np.ndarray:
        """(N, 10) float32 probabilities for `batch`, counted in the metrics and logged."""
        return (await self.answer(loaded, batch)).probabilities

    async def answer(self, loaded: Loaded, batch: np.ndarray) -> Answer:
        """The probabilities for `batch` and the log's ids, counted in the metrics (~5 us an
        image) and logged (~50 us an image): on the event loop for a few images (~1 ms each
        with the cnn, where a hop to the thread pool costs ~0.5 ms), else in the thread pool."""
        if len(batch) <= INLINE_IMAGES:
            return self.predict_and_log(loaded, batch)
        return await run_in_threadpool(self.predict_and_log, loaded, batch)

    def predict(self, loaded: Loaded, batch: np.ndarray) -> np.ndarray:
        probabilities = loaded.predictor.predict(batch)
        self.metrics.observe(loaded.predictor.version, probabilities)
        return probabilities

    def predict_and_log(self, loaded: Loaded, batch: np.ndarray) -> Answer:
        probabilities = self.predict(loaded, batch)
        if self.log is None:
            return Answer(probabilities, None)
        try:
            ids = self.log.record(loaded.predictor.version, self.holder.ref, batch, probabilities)
        except OSError as error:
            # A full disk costs the log, not the answer: it goes out without ids.
            log.warning("prediction log: could not record %d image(s): %s", len(batch), error)
            ids = None
        return Answer(probabilities, ids)


# --- reading the content --------------------------------------------------------------


def check_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(
            415, f"unsupported Content-Type {content_type or 'none'!r}: send application/json"
        )


async def read_body(request: Request) -> bytes:
    body = await request.body()  # BodyLimit stops it at the limit
    if not body:
        raise ApiError(400, "empty request body: send JSON")
    return body


@dataclass(frozen=True)
class InferRequest:
    batch: np.ndarray  # (N, 28, 28) float32
    outputs: tuple[str, ...]
    id: str | None


def parse_infer(document: Any, max_images: int) -> InferRequest:
    """An OIP inference request: one tensor of shape [N, 28, 28], UINT8 or FP32 pixels, N at
    most `max_images`."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list):
        raise ApiError(400, 'body must be an object with "inputs": [one tensor of images]')
    if len(inputs) != 1:
        raise ApiError(400, f'"inputs" must hold one tensor (the images), got {len(inputs)}')
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise ApiError(400, 'inputs[0] must be an object with "name", "shape", "datatype" '
                       'and "data"')
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise ApiError(400, f'inputs[0] has no "{key}"')
    if not isinstance(tensor["name"], str):
        raise ApiError(400, 'inputs[0] "name" must be a string')
    datatype, shape = tensor["datatype"], tensor["shape"]
    if datatype not in DATATYPES:
        raise ApiError(400, f'inputs[0] "datatype" must be UINT8 or FP32, got {datatype!r}')
    if not (isinstance(shape, list) and len(shape) == 3 and tuple(shape[1:]) == IMAGE_SHAPE
            and all(type(side) is int for side in shape) and shape[0] >= 1):
        raise ApiError(400, f'inputs[0] "shape" must be [N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}] '
                       f"with N >= 1, got {shape!r}")
    check_count(shape[0], max_images)
    data = pixel_array(tensor["data"], 'inputs[0] "data"', 400, integers=datatype == "UINT8")
    needed = math.prod(shape)
    if data.size != needed:
        raise ApiError(400, f'inputs[0] "data" holds {data.size} values; shape {shape} '
                       f"needs {needed}")
    return InferRequest(data.reshape(shape), parse_outputs(document), parse_id(document))


def parse_outputs(document: dict) -> tuple[str, ...]:
    """The outputs a request asks for, by name; all of them when it names none."""
    wanted = document.get("outputs")
    if wanted is None:
        return OUTPUTS
    if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
        raise ApiError(400, '"outputs" must be a list of {"name": "probabilities" or "digit"}')
    names = tuple(output.get("name") for output in wanted)
    for name in names:
        if name not in OUTPUTS:
            raise ApiError(400, f"unknown output {name!r}: the model answers "
                           "'probabilities' and 'digit'")
    return names


def parse_id(document: dict) -> str | None:
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, '"id" must be a string')
    return request_id


def parse_invocation(document: Any, max_images: int) -> np.ndarray:
    """MLflow's tensor input: {"instances": [...]} or {"inputs": [...]}, N x 28 x 28 pixels,
    N at most `max_images`."""
    if not (isinstance(document, dict) and len(document) == 1 and set(document) < set(MLFLOW_KEYS)):
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ApiError(400, 'body must be an object with one of "instances" or "inputs" (a list '
                       f"of {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixel arrays 0..255), got {keys}")
    (key, value), = document.items()
    if not isinstance(value, list) or not value:
        raise ApiError(400, f'"{key}" must be a non-empty list of '
                       f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixel arrays")
    check_count(len(value), max_images)
    batch = pixel_array(value, f'"{key}"', 400)
    if batch.ndim != 3 or batch.shape[1:] != IMAGE_SHAPE:
        raise ApiError(400, f'"{key}" must have shape {BATCH_SHAPE}, got {tuple(batch.shape)}')
    return batch


# --- answering ------------------------------------------------------------------------


def infer_answer(version: str, probabilities: np.ndarray, request: InferRequest) -> dict:
    n = len(probabilities)
    tensors = {
        "probabilities": {"name": "probabilities", "shape": [n, NUM_CLASSES], "datatype": "FP32",
                          "data": probabilities.ravel().tolist()},
        "digit": {"name": "digit", "shape": [n], "datatype": "INT64",
                  "data": probabilities.argmax(axis=1).tolist()},
    }
    answer = {"id": request.id} if request.id is not None else {}
    return {**answer, "model_name": MODEL_NAME, "model_version": version,
            "outputs": [tensors[name] for name in request.outputs]}


def model_metadata(loaded: Loaded) -> dict:
    return {
        "name": MODEL_NAME,
        "versions": [loaded.predictor.version],
        "platform": PLATFORMS[loaded.predictor.backend],
        # FP32 is what the model takes; UINT8 is accepted too (the same pixels 0..255).
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, *IMAGE_SHAPE]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
            {"name": "digit", "datatype": "INT64", "shape": [-1]},
        ],
    }


def check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise ApiError(404, f"unknown model {name!r}: this service serves {MODEL_NAME!r}")


def add_protocol_routes(app: FastAPI, scorer: Scorer) -> None:
    """The OIP v2 and MLflow routes, answered by `scorer`'s model (on the app itself: the
    metrics read each route's template from the app's routes)."""
    server = {"name": MODEL_NAME, "version": package_version("digits"), "extensions": []}

    @app.get("/v2")
    def server_metadata() -> dict:
        return server

    @app.get("/v2/health/live")
    def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready", responses=errors(503))
    def ready() -> dict:
        scorer.loaded()
        return {"ready": True}

    @app.get("/v2/models/{name}", responses=errors(404, 503))
    def metadata(name: str) -> dict:
        check_model(name)
        return model_metadata(scorer.loaded())

    @app.get("/v2/models/{name}/ready", responses=errors(404, 503))
    def model_ready(name: str) -> dict:
        check_model(name)
        scorer.loaded()
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", responses=errors(400, 404, 413, 415, 503),
              openapi_extra=json_body(INFER_BODY))
    async def infer(name: str, request: Request) -> JSONResponse:
        check_model(name)
        loaded = scorer.loaded()
        inference = await scorer.read_json(request, parse_infer)
        answer = await scorer.answer(loaded, inference.batch)
        return JSONResponse(infer_answer(loaded.predictor.version, answer.probabilities,
                                         inference), headers=answer.headers())

    @app.post("/invocations", responses=errors(400, 413, 415, 503),
              openapi_extra=json_body(INVOCATIONS_BODY))
    async def invocations(request: Request) -> JSONResponse:
        loaded = scorer.loaded()
        batch = await scorer.read_json(request, parse_invocation)
        answer = await scorer.answer(loaded, batch)
        return JSONResponse({"predictions": answer.probabilities.tolist()},
                            headers=answer.headers())

    @app.get("/ping", responses=errors(503))
    def ping() -> dict:
        scorer.loaded()
        return {"status": "ok"}

