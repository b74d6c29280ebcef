"""The Open Inference Protocol v2 (KServe, Triton, Seldon clients), as their clients speak it.

Health, server and model metadata, readiness, Triton's model configuration and
`POST /v2/models/digits[/versions/{version}]/infer` with one tensor of images
(digits.serving.oip_request), JSON or binary (the binary tensor data extension), answered
in JSON or, where asked, with the outputs' raw bytes after the JSON. The outputs are
`probabilities` (FP32 [N, 10]), `digit` (INT64 [N]) and `not_a_digit` (BOOL [N], the served
version's rule; in binary one byte an element, as Triton sends BOOL), all of them or those
the request names.

The service serves one version, the one its ref points at: its routes answer under
/versions/vN (or N) too; another version of the registry is a 400 saying which one is
served (a model-ready 4xx means "not ready"), one not in the registry a 404.
Model statistics and the model repository are not offered: a 404 saying where to look.
"""

from __future__ import annotations

from importlib.metadata import version as package_version

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.serving.errors import ApiError
from digits.serving.holder import Loaded
from digits.serving.oip_request import (
    HEADER_LENGTH,
    InferRequest,
    header_length,
    parse_infer_body,
)
from digits.serving.openapi import body, errors
from digits.serving.schemas import (
    BINARY,
    INFER_ANSWER,
    INFER_ANSWER_HEADERS,
    INFER_BODY,
    INFER_HEADERS,
)
from digits.serving.scorer import JSON_TYPE, Answer, Scorer, check_media_type
from digits.serving.versions import MODEL_NAME, served

PLATFORMS = {"onnx": "onnxruntime_onnx", "keras": "keras"}  # OIP's platform, per backend
BACKENDS = {"onnx": "onnxruntime", "keras": "keras"}  # Triton's backend, per backend
EXTENSIONS = ["binary_tensor_data", "model_configuration"]  # what this service supports
# What each route answers besides 200, in the OpenAPI document (digits.serving.openapi).
MODEL_ERRORS = errors(404, 503)  # no such model; none in service yet
VERSION_ERRORS = errors(400, 404, 503)  # and another version than the served one
INFER_ERRORS = errors(400, 404, 413, 415, 503)
INFER_OK = {"description": "the outputs, in JSON or (asked for in binary) JSON and their bytes",
            "content": INFER_ANSWER, "headers": INFER_ANSWER_HEADERS}
INFER_EXTRA = body(INFER_BODY, "JSON (application/json, or no Content-Type as Triton's and "
                   "KServe's clients send it) or the binary tensor data extension",
                   INFER_HEADERS)
NOT_OFFERED = {
    "statistics": "model statistics are not offered: GET /metrics has the service's counts "
                  "and latencies (Prometheus text)",
    "repository": "the model repository extension is not offered: this service serves the "
                  "version its ref points at (`digits promote` and `digits rollback` move it)",
}


def output_tensors(answer: Answer) -> dict[str, tuple[str, np.ndarray]]:
    """Each output by name: its OIP datatype and values (numpy's bool is one byte an element,
    Triton's binary BOOL)."""
    probabilities = answer.probabilities
    return {"probabilities": ("FP32", probabilities.astype("<f4")),
            "digit": ("INT64", probabilities.argmax(axis=1).astype("<i8")),
            "not_a_digit": ("BOOL", answer.not_a_digit.astype(np.bool_))}


def infer_response(version: str, answer: Answer, request: InferRequest) -> Response:
    """The answer: JSON, or JSON and then the raw bytes of the outputs asked for in binary
    (Inference-Header-Content-Length giving the JSON's length)."""
    tensors, headers = output_tensors(answer), answer.headers()
    described, raw = [], []
    for output in request.outputs:
        datatype, values = tensors[output.name]
        tensor = {"name": output.name, "datatype": datatype, "shape": list(values.shape)}
        if output.binary:
            tensor["parameters"] = {"binary_data_size": values.nbytes}
            raw.append(values.tobytes())
        else:
            tensor["data"] = values.ravel().tolist()
        described.append(tensor)
    echoed = {"id": request.id} if request.id is not None else {}
    header = orjson.dumps({**echoed, "model_name": MODEL_NAME, "model_version": version,
                           "outputs": described})
    if not raw:
        return Response(header, media_type=JSON_TYPE, headers=headers)
    return Response(b"".join([header, *raw]), media_type=BINARY,
                    headers={**headers, HEADER_LENGTH: str(len(header))})


def model_metadata(loaded: Loaded) -> dict:
    return {
        "name": MODEL_NAME,
        "versions": [loaded.predictor.version],
        "platform": PLATFORMS[loaded.predictor.backend],
        # FP32 is what the model takes; other numeric datatypes are accepted too (0..255).
        "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, *IMAGE_SHAPE]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
            {"name": "digit", "datatype": "INT64", "shape": [-1]},
            {"name": "not_a_digit", "datatype": "BOOL", "shape": [-1]},
        ],
    }


def model_config(loaded: Loaded, max_images: int) -> dict:
    """Triton's model configuration (its JSON form) for what the model takes and answers."""
    return {
        "name": MODEL_NAME,
        "platform": PLATFORMS[loaded.predictor.backend],
        "backend": BACKENDS[loaded.predictor.backend],
        "version_policy": {"specific": {"versions": [int(loaded.predictor.version[1:])]}},
        "max_batch_size": max_images,
        "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": list(IMAGE_SHAPE)}],
        "output": [
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [NUM_CLASSES]},
            {"name": "digit", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
            {"name": "not_a_digit", "data_type": "TYPE_BOOL", "dims": [1],
             "reshape": {"shape": []}},
        ],
    }


async def read_infer(scorer: Scorer, request: Request) -> InferRequest:
    """The inference request in a body of JSON (with a JSON Content-Type or none) or of JSON
    and binary tensor data."""
    check_media_type(request, (JSON_TYPE, BINARY))
    json_length = header_length(request.headers.get(HEADER_LENGTH))
    return await scorer.read(request,
                             lambda body, limit: parse_infer_body(body, json_length, limit))


def add_oip_routes(app: FastAPI, scorer: Scorer) -> None:
    """The OIP v2 routes, answered by `scorer`'s model (on the app itself: the metrics read
    each route's template from the app's routes)."""
    server = {"name": MODEL_NAME, "version": package_version("digits"), "extensions": EXTENSIONS}
    add_refusals(app)

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

    @app.get("/v2/models/{name}", responses=MODEL_ERRORS)
    def metadata(name: str) -> dict:
        return version_metadata(name, "")

    @app.get("/v2/models/{name}/versions/{version}", responses=VERSION_ERRORS)
    def version_metadata(name: str, version: str) -> dict:
        return model_metadata(served(scorer, name, version))

    @app.get("/v2/models/{name}/ready", responses=MODEL_ERRORS)
    def model_ready(name: str) -> dict:
        return version_ready(name, "")

    @app.get("/v2/models/{name}/versions/{version}/ready", responses=VERSION_ERRORS)
    def version_ready(name: str, version: str) -> dict:
        served(scorer, name, version)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/config", responses=MODEL_ERRORS)
    def config(name: str) -> dict:
        return version_config(name, "")

    @app.get("/v2/models/{name}/versions/{version}/config", responses=VERSION_ERRORS)
    def version_config(name: str, version: str) -> dict:
        return model_config(served(scorer, name, version), scorer.slots.limits.max_images)

    @app.post("/v2/models/{name}/infer", responses={200: INFER_OK, **INFER_ERRORS},
              openapi_extra=INFER_EXTRA)
    async def infer(name: str, request: Request) -> Response:
        return await version_infer(name, "", request)

    @app.post("/v2/models/{name}/versions/{version}/infer",
              responses={200: INFER_OK, **INFER_ERRORS}, openapi_extra=INFER_EXTRA)
    async def version_infer(name: str, version: str, request: Request) -> Response:
        loaded = served(scorer, name, version)
        inference = await read_infer(scorer, request)
        answer = await scorer.answer(loaded, inference.batch)
        return infer_response(loaded.predictor.version, answer, inference)


def add_refusals(app: FastAPI) -> None:
    """Triton's statistics and repository routes: a 404 that says why, before
    /v2/models/{name} takes "stats" for a model's name."""

    @app.get("/v2/models/stats", include_in_schema=False)
    @app.get("/v2/models/{name}/stats", include_in_schema=False)
    @app.get("/v2/models/{name}/versions/{version}/stats", include_in_schema=False)
    def statistics() -> JSONResponse:
        raise ApiError(404, NOT_OFFERED["statistics"])

    @app.api_route("/v2/repository/{rest:path}", methods=["GET", "POST"],
                   include_in_schema=False)
    def repository() -> JSONResponse:
        raise ApiError(404, NOT_OFFERED["repository"])
