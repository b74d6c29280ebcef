"""MLflow's scoring server protocol, as MLflow's own client (`ScoringServerClient`,
`mlflow models predict`) sends it.

`POST /invocations` with exactly one of
- `dataframe_split` (pandas' `to_dict(orient="split")`, MLflow's default for a DataFrame) or
  `dataframe_records` (`orient="records"`): a row per image, either 784 pixel columns in
  row-major order or one column whose cell holds the image (28x28 or 784 pixels);
- `instances` or `inputs`: TF Serving's formats (digits.serving.tfserving), what MLflow sends
  for a numpy array or a dict holding one;
and optionally `params` (an object: accepted, and ignored, since the model takes none),
answered `{"predictions": [[10 probabilities], ...], "not_a_digit": [true|false, ...]}`:
the probabilities where MLflow's clients read them, and each image's flag (the served
version's rule) beside them, as MLflow's scoring server adds a field beside "predictions"
(`predictions_to_json`'s metadata). A dict of outputs under "predictions", as MLflow writes a
model's several outputs, would break every client reading the probabilities as an array
(`get_predictions(predictions_format="ndarray")`). `GET /ping` and `GET /health` answer
200 once a model is in service; `GET /version` the service's version.
"""

from __future__ import annotations

import math
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from digits.config import IMAGE_SHAPE
from digits.serving.documents import check_count, pixel_array
from digits.serving.errors import ApiError
from digits.serving.openapi import errors, json_body
from digits.serving.schemas import INVOCATIONS_BODY, INVOCATIONS_OK
from digits.serving.scorer import Scorer
from digits.serving.tfserving import IMAGE_TEXT, parse_tensor_input

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PARAMS = "params"
IMAGE_SIZE = math.prod(IMAGE_SHAPE)
ROW_TEXT = f"{IMAGE_SIZE} pixel columns, or one column holding the image ({IMAGE_TEXT})"


def parse_invocation(document: Any, max_images: int) -> np.ndarray:
    """An /invocations body -> (N, 28, 28) float32, N at most `max_images`."""
    if not isinstance(document, dict):
        raise ApiError(400, f"body must be an object with one of {list(FORMATS)}, got "
                       f"{type(document).__name__}")
    keys = set(document) - {PARAMS}
    if len(keys) != 1 or not keys < set(FORMATS):
        raise ApiError(400, f"body must have exactly one of {list(FORMATS)} (and optionally "
                       f'"{PARAMS}"), got {sorted(document)}')
    if not isinstance(document.get(PARAMS, {}), dict):
        raise ApiError(400, f'"{PARAMS}" must be an object')
    (key,) = keys
    if key == "dataframe_split":
        return frame_images(split_rows(document[key]), key, max_images)
    if key == "dataframe_records":
        return frame_images(record_rows(document[key]), key, max_images)
    return parse_tensor_input(key, document[key], max_images)


def split_rows(frame: Any) -> list:
    """The rows of a data frame in pandas' split orient: {"columns", "data", "index"}."""
    if not isinstance(frame, dict) or not isinstance(frame.get("data"), list):
        raise ApiError(400, '"dataframe_split" must be an object with "data": [rows] (and '
                       'optionally "columns" and "index")')
    columns, rows = frame.get("columns"), frame["data"]
    if columns is not None and rows and not (
            isinstance(columns, list) and all(isinstance(row, list) and len(row) == len(columns)
                                              for row in rows)):
        raise ApiError(400, '"dataframe_split": every row of "data" must have a value for '
                       'each of "columns"')
    return rows


def record_rows(records: Any) -> list:
    """The rows of a data frame in pandas' records orient, columns in the first's order."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ApiError(400, '"dataframe_records" must be a list of objects, one per image')
    columns = list(records[0]) if records else []
    for index, record in enumerate(records):
        if record.keys() != set(columns):
            raise ApiError(400, f'"dataframe_records"[{index}] has other columns than the '
                           "first record")
    return [[record[column] for column in columns] for record in records]


def frame_images(rows: list, key: str, max_images: int) -> np.ndarray:
    """A data frame's rows, each an image, -> (N, 28, 28)."""
    if not rows:
        raise ApiError(400, f'"{key}" has no rows: send one per image ({ROW_TEXT})')
    check_count(len(rows), max_images)
    batch = pixel_array(rows, f'"{key}"', 400, regular=f"rows of {ROW_TEXT}")
    if batch.ndim >= 2 and batch.shape[1] == 1:  # one column: the image is in its cell
        batch = batch[:, 0]
    if batch.shape[1:] not in ((IMAGE_SIZE,), IMAGE_SHAPE):
        raise ApiError(400, f'"{key}" must have rows of {ROW_TEXT}, got shape {batch.shape}')
    return batch.reshape(len(batch), *IMAGE_SHAPE)


def add_mlflow_routes(app: FastAPI, scorer: Scorer) -> None:
    """MLflow's scoring server routes, answered by `scorer`'s model."""
    service_version = package_version("digits")

    @app.post("/invocations", responses={200: INVOCATIONS_OK, **errors(400, 413, 415, 503)},
              openapi_extra=json_body(INVOCATIONS_BODY, "JSON (application/json, or no "
                                      "Content-Type)"))
    async def invocations(request: Request) -> JSONResponse:
        loaded = scorer.loaded()
        batch = await scorer.read_json(request, parse_invocation)
        answer = await scorer.answer(loaded, batch)
        return JSONResponse({"predictions": answer.probabilities.tolist(),
                             "not_a_digit": answer.not_a_digit.tolist()},
                            headers=answer.headers())

    @app.get("/ping", responses=errors(503))
    @app.get("/health", responses=errors(503))
    def ping() -> dict:
        scorer.loaded()
        return {"status": "ok"}

    @app.get("/version", response_class=PlainTextResponse)
    def version() -> PlainTextResponse:
        return PlainTextResponse(service_version)
