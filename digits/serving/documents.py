"""A JSON request body, parsed within bounds, and the pixel arrays it holds.

Parsing holds the interpreter (no other thread, the event loop included, runs meanwhile), so
its cost must be bounded, not only moved off the event loop: a body may hold no more arrays
and objects than `max_images` images need, counted in its bytes before it is parsed (2 MB of
empty lists take ~0.17 s to parse, by either parser), and orjson parses numbers 4-8 times
faster than the standard library (2 MB of fractions in ~15 ms instead of ~120 ms,
benchmarks/results.md). NaN and Infinity, which are not JSON, are refused by it.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import orjson

from digits.config import IMAGE_SHAPE
from digits.data.images import BATCH_SHAPE
from digits.serving.errors import ApiError

IMAGE_SHAPE_TEXT = f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}"
# Lists per image as nested JSON (its rows and itself, and the row or object that holds it in
# a data frame or TF Serving's named instances), and room for the rest of a body: its object,
# OIP's "inputs" list, tensor, "shape", "outputs" and "parameters".
CONTAINERS_PER_IMAGE = IMAGE_SHAPE[0] + 2
SPARE_CONTAINERS = 64


def parse_json(body: bytes, max_images: int) -> Any:
    """The body's JSON document; 413 before parsing when it holds more arrays and objects
    than `max_images` images need, 400 when it is not JSON."""
    bound = max_images * CONTAINERS_PER_IMAGE + SPARE_CONTAINERS
    containers = body.count(b"[") + body.count(b"{")  # in strings too: harmless for a bound
    if containers > bound:
        raise ApiError(413, f"JSON body has {containers} arrays and objects: more than the "
                       f"limit of {max_images} images per request takes ({bound})")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:  # invalid UTF-8, NaN, 1e999, nesting too deep
        raise ApiError(400, f"body is not valid JSON ({error})") from None


def check_count(images: int, max_images: int) -> None:
    """413 for a request of more images than the limit, before they are converted."""
    if images > max_images:
        raise ApiError(413, f"{images} images: over the limit of {max_images} images per "
                       "request; send them in several requests")


def pixel_array(value: Any, where: str, status: int, integers: bool = False,
                regular: str = "a flat or nested list of numbers") -> np.ndarray:
    """A list of pixel values as float32; `status` naming `where` otherwise (`regular`: what
    a ragged list should have been): numbers 0..255 only, so no true or false, which numpy
    reads as 1 and 0 among numbers."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # ragged nesting
        raise ApiError(status, f"{where} must be {regular}") from None
    if array.dtype.kind not in "iuf":  # strings, null, all booleans, objects
        raise ApiError(status, f"{where}: pixel values must be numbers 0..255")
    if holds_booleans(value, array.ndim):
        raise ApiError(status, f"{where}: pixel values must be numbers 0..255, not true or false")
    if integers and array.dtype.kind == "f":
        raise ApiError(status, f"{where}: integer data must be integers 0..255")
    return check_pixels(array, where, status)


def check_pixels(array: np.ndarray, where: str, status: int) -> np.ndarray:
    """Numeric pixels as float32, once they are all finite and within 0..255."""
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 255):
        raise ApiError(status, f"{where}: pixel values must lie in 0..255 (MNIST format)")
    return array.astype(np.float32)


def holds_booleans(value: Any, depth: int) -> bool:
    """Whether nested lists `depth` deep, as regular as numpy found them, hold a bool (~30 ns
    a value: the types are collected in C)."""
    if depth == 0:
        return isinstance(value, bool)
    values = value
    for _ in range(depth - 1):
        values = chain.from_iterable(values)
    return bool in set(map(type, values))


def parse_instances(body: bytes, max_images: int) -> np.ndarray:
    """/v1/predict's JSON {"instances": [28x28 rows of 0..255, ...]} -> (N, 28, 28) float32,
    used as is."""
    document = parse_json(body, max_images)
    if not isinstance(document, dict) or "instances" not in document:
        raise ApiError(422, 'JSON body must be an object with "instances"')
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise ApiError(422, f'"instances" must be a non-empty list of {IMAGE_SHAPE_TEXT} pixel '
                       "arrays")
    check_count(len(instances), max_images)
    batch = pixel_array(instances, '"instances"', 422,
                        regular=f"images of {IMAGE_SHAPE[0]} rows of {IMAGE_SHAPE[1]} pixels")
    if batch.ndim != 3 or batch.shape[1:] != IMAGE_SHAPE:
        raise ApiError(422, f'"instances" must have shape {BATCH_SHAPE}, got {tuple(batch.shape)}')
    return batch
