"""`POST /v1/feedback {"id": ..., "label": 0..9}`: what a person says a logged answer's digit
really was, recorded in the service's prediction log (digits.monitoring.log).

200 with the correction recorded (a repeat of the same label too: it writes nothing), 404
for an id the log does not hold, 422 for a bad label or body, 413 for a body over
FEEDBACK_MAX_BYTES, 409 when the service keeps no log (`digits serve` without `--log-dir`),
507 when the labels awaiting `digits feedback export --add` fill their room in the log, 503 when
the log cannot be written (disk full) or every decode slot is taken (the body is read and
parsed within one, as a prediction's). A write like /v1/predict: the same-origin guard, Host
check and body limit apply (they are middleware around every route).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from digits.config import NUM_CLASSES
from digits.monitoring.log import PredictionLog
from digits.monitoring.records import Correction, LabelsFull, UnknownPrediction, format_time
from digits.serving.documents import parse_json
from digits.serving.errors import ApiError
from digits.serving.inputs import DecodeSlots
from digits.serving.protocols import check_json, read_body
from digits.serving.settings import FEEDBACK_MAX_BYTES

FIELDS = ("id", "label")
logger = logging.getLogger(__name__)
NO_LOG = ("this service keeps no prediction log, so it takes no corrections: start it with "
          "`digits serve --log-dir DIR`")


def parse_feedback(document: Any) -> tuple[str, int]:
    """The (id, label) of a feedback body; 422 naming what is wrong."""
    if not isinstance(document, dict):
        raise ApiError(422, 'body must be an object {"id": "...", "label": 0..9}')
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise ApiError(422, f'unknown field(s) {unknown}: send {{"id": "...", "label": 0..9}}')
    for name in FIELDS:
        if name not in document:
            raise ApiError(422, f'"{name}" is missing: send {{"id": "...", "label": 0..9}}')
    id_, label = document["id"], document["label"]
    if not isinstance(id_, str):
        raise ApiError(422, '"id" must be a string: the id of an answer of /v1/predict')
    if type(label) is not int or not 0 <= label < NUM_CLASSES:  # true, 4.0 and "4" are no label
        raise ApiError(422, f'"label" must be an integer 0..{NUM_CLASSES - 1}, got {label!r}'[:120])
    return id_, label


def answer(correction: Correction) -> dict:
    return {"id": correction.id, "label": correction.label, "digit": correction.digit,
            "confirmed": correction.confirmed, "time": format_time(correction.time)}


async def read_feedback(request: Request, slots: DecodeSlots) -> tuple[str, int]:
    """The (id, label) of the request, its body read and parsed within a decode slot: on the
    event loop, as FEEDBACK_MAX_BYTES of JSON parse in microseconds."""
    check_json(request)
    async with slots:
        body = await read_body(request)
        if len(body) > FEEDBACK_MAX_BYTES:
            raise ApiError(413, f"feedback body is over the limit of {FEEDBACK_MAX_BYTES} "
                           'bytes: send {"id": "...", "label": 0..9}')
        return parse_feedback(parse_json(body, slots.limits.max_images))


def add_feedback_route(app: FastAPI, log: PredictionLog | None, slots: DecodeSlots) -> None:
    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        if log is None:
            raise ApiError(409, NO_LOG)
        id_, label = await read_feedback(request, slots)
        try:
            # Off the event loop: finding an id may read the new bytes of every segment.
            correction = await run_in_threadpool(log.correct, id_, label)
        except UnknownPrediction as error:
            raise ApiError(404, str(error)) from None
        except LabelsFull as error:  # kept until exported, so new ones wait for an export
            raise ApiError(507, str(error)) from None
        except OSError as error:  # the disk's fault, not the request's; no server path shown
            logger.warning("prediction log: could not record a correction: %s", error)
            raise ApiError(503, f"the prediction log cannot be written now ({error.strerror})",
                           headers={"Retry-After": "60"}) from None
        return answer(correction)
