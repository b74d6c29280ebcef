"""What every prediction route shares: the model in service, reading a body within the
limits, and scoring it with the metrics and the prediction log.

Every prediction route, /v1/predict too, goes through one `Scorer`: the verified model the
holder has in service (503 until there is one), a decode slot while its body is read and
parsed, the metrics, and the prediction log when the service keeps one (each answer's ids
in the `X-Request-ID` header: the first image's). Each answer carries the served version's
"not a digit" flags (`Predictor.not_a_digit`), computed once here for every route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from digits.monitoring.log import PredictionLog
from digits.serving.documents import parse_json
from digits.serving.errors import ApiError
from digits.serving.holder import Loaded, ModelHolder
from digits.serving.inputs import DecodeSlots
from digits.serving.metrics import ServiceMetrics

INLINE_IMAGES = 4  # batches this small are scored on the event loop (Scorer.answer)
REQUEST_ID_HEADER = "X-Request-ID"  # the first image's id; the body of /v1/predict has each
JSON_TYPE = "application/json"

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    probabilities: np.ndarray  # (N, 10) float32
    not_a_digit: np.ndarray  # (N,) bool: flagged by the served version's rule
    ids: list[str] | None = None  # the log's id of each image; None without a log (or if it failed)

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

    async def read_json(self, request: Request, parse: Callable[[Any, int], T],
                        also: tuple[str, ...] = ()) -> T:
        """The JSON body, read and parsed by `parse` (with the images-per-request limit)
        within a decode slot, as /v1/predict's, in the thread pool. `also`: media types
        taken as JSON besides application/json and none."""
        check_media_type(request, (JSON_TYPE, *also))
        return await self.read(request, lambda body, limit: parse(parse_json(body, limit), limit))

    async def read(self, request: Request, parse: Callable[[bytes, int], T]) -> T:
        """The body as `parse` makes it out, within a decode slot, in the thread pool."""
        check_encoding(request)
        max_images = self.slots.limits.max_images
        async with self.slots:
            body = await read_body(request)
            return await run_in_threadpool(parse, body, max_images)

    async def answer(self, loaded: Loaded, batch: np.ndarray) -> Answer:
        """The probabilities and flags for `batch` and the log's ids, counted in the metrics
        (~5 us an image) and logged (~50 us an image): on the event loop for a few images
        (~1 ms each with the cnn, where a hop to the thread pool costs ~0.5 ms), else in the
        thread pool."""
        if len(batch) <= INLINE_IMAGES:
            return self.predict_and_log(loaded, batch)
        return await run_in_threadpool(self.predict_and_log, loaded, batch)

    def predict(self, loaded: Loaded, batch: np.ndarray) -> Answer:
        """`batch`'s answer, without ids, counted in the metrics."""
        predictor = loaded.predictor
        probabilities = predictor.predict(batch)
        flags = predictor.not_a_digit(probabilities)
        self.metrics.observe(predictor.version, probabilities, flags)
        return Answer(probabilities, flags)

    def predict_and_log(self, loaded: Loaded, batch: np.ndarray) -> Answer:
        answer = self.predict(loaded, batch)
        if self.log is None:
            return answer
        try:
            ids = self.log.record(loaded.predictor.version, self.holder.ref, batch,
                                  answer.probabilities, not_a_digit=answer.not_a_digit)
        except OSError as error:
            # A full disk costs the log, not the answer: it goes out without ids.
            log.warning("prediction log: could not record %d image(s): %s", len(batch), error)
            return answer
        return replace(answer, ids=ids)


# --- reading the content --------------------------------------------------------------


def check_media_type(request: Request, accepted: tuple[str, ...], optional: bool = True) -> None:
    """415 unless the Content-Type is one of `accepted`, or absent where `optional`: Triton's
    and KServe's clients send none with a JSON body. A charset, if named, must be UTF-8."""
    header = request.headers.get("content-type")
    if header is None and optional:
        return
    media_type, *parameters = [part.strip().lower() for part in (header or "").split(";")]
    if media_type not in accepted:
        raise ApiError(415, f"unsupported Content-Type {media_type or 'none'!r}: send "
                       f"{' or '.join(accepted)}{', or none' if optional else ''}")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise ApiError(415, f"unsupported charset {value.strip()!r}: JSON is UTF-8")


def check_json(request: Request) -> None:
    """/v1/feedback's: application/json, named."""
    check_media_type(request, (JSON_TYPE,), optional=False)


def check_encoding(request: Request) -> None:
    """415 for a compressed body: it is read as sent, and the body limit counts its bytes."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", ""):
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}: send the body "
                       "uncompressed")


async def read_body(request: Request) -> bytes:
    body = await request.body()  # BodyLimit stops it at the limit
    if not body:
        raise ApiError(400, "empty request body: send JSON")
    return body
