"""TF Serving's REST API on /v1/models/digits, as TensorFlow users and gateways speak it.

- `POST /v1/models/digits[/versions/N]:predict` with `{"instances": [...]}` (the row format:
  each image, or `{"images": image}`) answered `{"predictions": [[10 probabilities], ...]}`,
  or `{"inputs": ...}` (the columnar format: the images, or `{"images": images}`) answered
  `{"outputs": [[10 probabilities], ...]}`; `signature_name`, if sent, `serving_default`.
- `GET /v1/models/digits[/versions/N]`: the model's status; `.../metadata`: its signature.

An image is 28x28 rows or 784 pixels 0..255. Errors are `{"error": "..."}`, as TF Serving's.
The signature has one output, the probabilities: these answers carry no "not a digit" flag
(the other protocols do); the metrics and the prediction log count and record it all the same.
MLflow's `instances` and `inputs` are this format too (digits.serving.mlflow_protocol).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from digits.config import IMAGE_SHAPE, NUM_CLASSES
from digits.serving.documents import check_count, pixel_array
from digits.serving.errors import ApiError
from digits.serving.holder import Loaded
from digits.serving.openapi import errors, json_body
from digits.serving.schemas import PREDICT_TF_BODY, TF_SIGNATURE
from digits.serving.scorer import Scorer
from digits.serving.versions import MODEL_NAME, served

IMAGE_SIZE = math.prod(IMAGE_SHAPE)
IMAGE_TEXT = f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} or {IMAGE_SIZE} pixels 0..255"
SIGNATURE = TF_SIGNATURE
# The registry's listing moved from these paths to /v1/registry/versions (issue 29).
MOVED = " (the registry's versions are under /v1/registry/versions)"
# curl -d, as in TF Serving's own examples, sends a form type; TF Serving reads JSON anyway.
FORM_TYPE = "application/x-www-form-urlencoded"
# What each route answers besides 200, in the OpenAPI document (digits.serving.openapi).
MODEL_ERRORS = errors(404, 503)  # no such model; none in service yet
VERSION_ERRORS = errors(400, 404, 503)  # and another version than the served one
PREDICT_ERRORS = errors(400, 404, 413, 415, 503)
PREDICT_EXTRA = json_body(PREDICT_TF_BODY, f"JSON (application/json, none, or {FORM_TYPE} as "
                          "curl -d sends it)")


def parse_tensor_input(key: str, value: Any, max_images: int) -> np.ndarray:
    """`instances` or `inputs`: a list of images, or (named, for a model's one input) a
    list of {name: image} or {name: images} -> (N, 28, 28) float32."""
    if key == "inputs" and isinstance(value, dict):
        value = only_value(value, '"inputs"')
    elif key == "instances" and isinstance(value, list) and value and isinstance(value[0], dict):
        value = [only_value(row, f'"instances"[{index}]') if isinstance(row, dict) else row
                 for index, row in enumerate(value)]
    if not isinstance(value, list) or not value:
        raise ApiError(400, f'"{key}" must be a non-empty list of images ({IMAGE_TEXT})')
    check_count(len(value), max_images)
    return images(pixel_array(value, f'"{key}"', 400), f'"{key}"')


def only_value(named: dict, where: str) -> Any:
    """The tensor of a {name: tensor} object: the model has one input."""
    if len(named) != 1:
        raise ApiError(400, f"{where} must name one input (the images), got {sorted(named)}")
    return next(iter(named.values()))


def images(batch: np.ndarray, where: str) -> np.ndarray:
    """A batch of 28x28 or flat 784-pixel images as (N, 28, 28)."""
    if (batch.ndim == 2 and batch.shape[1] == IMAGE_SIZE) or batch.shape[1:] == IMAGE_SHAPE:
        return batch.reshape(len(batch), *IMAGE_SHAPE)
    raise ApiError(400, f"{where} must be images of {IMAGE_TEXT}, got shape {batch.shape}")


def parse_predict(document: Any, max_images: int) -> tuple[str, np.ndarray]:
    """A predict request -> its format's key and the images."""
    if not isinstance(document, dict):
        raise ApiError(400, 'body must be an object with "instances" or "inputs"')
    signature = document.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ApiError(400, f"unknown signature_name {signature!r}: the model has "
                       f"{SIGNATURE!r}")
    keys = set(document) - {"signature_name"}
    if keys not in ({"instances"}, {"inputs"}):
        raise ApiError(400, 'body must have one of "instances" (row format) or "inputs" '
                       f"(columnar format), got {sorted(keys)}")
    (key,) = keys
    return key, parse_tensor_input(key, document[key], max_images)


def model_status(loaded: Loaded) -> dict:
    return {"model_version_status": [{
        "version": loaded.predictor.version[1:], "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }]}


def tensor_info(name: str, dims: tuple[int, ...]) -> dict:
    return {"dtype": "DT_FLOAT", "name": name,
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims],
                             "unknown_rank": False}}


def model_metadata(loaded: Loaded) -> dict:
    """The model's signature, as TF Serving's metadata shows a SavedModel's."""
    signature = {
        "inputs": {"images": tensor_info("serving_default_images:0", (-1, *IMAGE_SHAPE))},
        "outputs": {"probabilities": tensor_info("StatefulPartitionedCall:0",
                                                 (-1, NUM_CLASSES))},
        "method_name": "tensorflow/serving/predict",
    }
    return {"model_spec": {"name": MODEL_NAME, "signature_name": "",
                           "version": loaded.predictor.version[1:]},
            "metadata": {"signature_def": {"signature_def": {SIGNATURE: signature}}}}


def add_tfserving_routes(app: FastAPI, scorer: Scorer) -> None:
    """TF Serving's routes, answered by `scorer`'s model."""

    def model(name: str, version: str) -> Loaded:
        return served(scorer, name, version, MOVED)

    @app.post("/v1/models/{name}:predict", responses=PREDICT_ERRORS,
              openapi_extra=PREDICT_EXTRA)
    async def predict(name: str, request: Request) -> JSONResponse:
        return await version_predict(name, "", request)

    @app.post("/v1/models/{name}/versions/{version}:predict", responses=PREDICT_ERRORS,
              openapi_extra=PREDICT_EXTRA)
    async def version_predict(name: str, version: str, request: Request) -> JSONResponse:
        loaded = model(name, version)
        key, batch = await scorer.read_json(request, parse_predict, also=(FORM_TYPE,))
        answer = await scorer.answer(loaded, batch)
        field = "predictions" if key == "instances" else "outputs"
        return JSONResponse({field: answer.probabilities.tolist()}, headers=answer.headers())

    # GET .../digits:predict would reach the status routes below as a model or version
    # named "digits:predict" (a 404): it is the predict route's, asked with the wrong method.
    @app.get("/v1/models/{name}:predict", include_in_schema=False)
    @app.get("/v1/models/{name}/versions/{version}:predict", include_in_schema=False)
    def predict_by_get() -> None:
        raise ApiError(405, "Method Not Allowed: :predict takes POST", {"Allow": "POST"})

    @app.get("/v1/models/{name}", responses=MODEL_ERRORS)
    def status(name: str) -> dict:
        return model_status(model(name, ""))

    @app.get("/v1/models/{name}/versions/{version}", responses=VERSION_ERRORS)
    def version_status(name: str, version: str) -> dict:
        return model_status(model(name, version))

    @app.get("/v1/models/{name}/metadata", responses=MODEL_ERRORS)
    def metadata(name: str) -> dict:
        return model_metadata(model(name, ""))

    @app.get("/v1/models/{name}/versions/{version}/metadata", responses=VERSION_ERRORS)
    def version_metadata(name: str, version: str) -> dict:
        return model_metadata(model(name, version))
