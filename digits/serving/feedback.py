"""`POST /v1/feedback {"id": ..., "label": 0..9}`: what a person says a logged answer's digit
really was, recorded in the service's prediction log (digits.monitoring.log).

Sent with `Authorization: Bearer <token>`, a token the operator made (digits.monitoring.
tokens), the label is trusted and recorded with the token's name; without Authorization (the
page, anonymous clients) it is a suggestion, which trains nothing until a person accepts it
in `digits feedback review`. Any other Authorization (not Bearer, a token unknown or revoked)
is a 401 with `WWW-Authenticate: Bearer`, never taken as a suggestion: a client that meant to
be trusted learns that it is not.

200 with the correction recorded (a repeat too: it writes nothing), 404 for an id the log
does not hold, 422 for a bad label or body, 413 for a body over FEEDBACK_MAX_BYTES, 409 when
the service keeps no log (`digits serve` without `--log-dir`), 507 when the trusted labels
awaiting `digits feedback export --add`, or the suggestions awaiting review, fill their room in
the log, 503 when the log or the tokens file cannot be read or written (disk full) or every
decode slot is taken (the body is read and parsed within one, as a prediction's). A write
like /v1/predict: the same-origin guard, Host check and body limit apply (they are middleware
around every route).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from digits.config import NUM_CLASSES
from digits.errors import DataError
from digits.monitoring.log import PredictionLog
from digits.monitoring.records import Correction, LabelsFull, UnknownPrediction, format_time
from digits.monitoring.tokens import TokenCheck
from digits.serving.documents import parse_json
from digits.serving.errors import ApiError
from digits.serving.inputs import DecodeSlots
from digits.serving.openapi import errors, json_body
from digits.serving.schemas import FEEDBACK_BODY
from digits.serving.scorer import check_json, read_body
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
            "confirmed": correction.confirmed, "time": format_time(correction.time),
            "source": correction.source, "credential": correction.credential}


def credential_of(request: Request, tokens: TokenCheck) -> str | None:
    """The name of the request's bearer token; None without Authorization (a suggestion);
    401 for any other Authorization, 503 if the tokens file cannot be read."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, token = get_authorization_scheme_param(header)
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "Authorization must be `Bearer <token>` with a token of the "
                       "operator's (`digits feedback tokens add`); send none to suggest a label",
                       headers={"WWW-Authenticate": "Bearer"})
    try:
        name = tokens.name_of(token)
    except DataError as error:  # fails closed; the path stays in the service's log
        logger.warning("feedback tokens: %s", error)
        raise ApiError(503, "the service cannot read its tokens now: no token is taken "
                       "(`digits feedback tokens list` says why)",
                       headers={"Retry-After": "60"}) from None
    if name is None:
        raise ApiError(401, "the bearer token is not valid (unknown or revoked): ask the "
                       "operator for one, or send none to suggest a label",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return name


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


def add_feedback_route(app: FastAPI, log: PredictionLog | None, tokens: TokenCheck | None,
                       slots: DecodeSlots) -> None:
    @app.post("/v1/feedback", responses=errors(400, 401, 404, 409, 413, 415, 422, 503, 507),
              openapi_extra=json_body(FEEDBACK_BODY))
    async def feedback(request: Request) -> dict:
        if log is None or tokens is None:
            raise ApiError(409, NO_LOG)
        credential = credential_of(request, tokens)  # before the body: a refusal costs little
        id_, label = await read_feedback(request, slots)
        try:
            # Off the event loop: finding an id may read the new bytes of every segment.
            correction = await run_in_threadpool(log.correct, id_, label, credential)
        except UnknownPrediction as error:
            raise ApiError(404, str(error)) from None
        except LabelsFull as error:  # kept until settled, so new ones wait for that
            raise ApiError(507, str(error)) from None
        except OSError as error:  # the disk's fault, not the request's; no server path shown
            logger.warning("prediction log: could not record a correction: %s", error)
            raise ApiError(503, f"the prediction log cannot be written now ({error.strerror})",
                           headers={"Retry-After": "60"}) from None
        return answer(correction)
