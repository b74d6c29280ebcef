"""A prediction request's input: images or JSON instances, decoded within the limits.

Bad input is an `ApiError`, a 4xx `{"error": "..."}` naming the problem, never a 500.
"""

from __future__ import annotations

import io
import json

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from digits.config import IMAGE_SHAPE
from digits.data.images import BATCH_SHAPE, normalize_image, to_grayscale
from digits.serving.settings import Limits

# Per request: many small bombs under the body limit must not add up to one big one.
MAX_REQUEST_PIXELS_FACTOR = 4
IMAGE_FORMATS = ["PNG", "JPEG"]  # the only decoders Pillow may try on a request's bytes


class ApiError(Exception):
    """A request the service refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status)


# --- the body's content ---------------------------------------------------------------


def decode_upload(data: bytes, label: str, max_pixels: int) -> tuple[np.ndarray, int]:
    """PNG/JPEG bytes -> (28, 28) float32 MNIST pixels, the way `digits predict` reads a
    file, and the image's pixel count; refuses an oversized image before decoding it."""
    if not data:
        raise ApiError(422, f"{label}: empty file")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise ApiError(
                    413,
                    f"{label}: {image.width}x{image.height} pixels is over the limit of "
                    f"{max_pixels} pixels",
                )
            image.load()
            # Same steps as digits.data.images.read_grayscale: EXIF rotation, then grayscale.
            gray = to_grayscale(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise ApiError(422, f"{label}: not a PNG or JPEG image") from None
    except Image.DecompressionBombError as error:
        raise ApiError(413, f"{label}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's truncated/corrupt data
        raise ApiError(422, f"{label}: corrupt or truncated image ({error})") from None
    try:
        return normalize_image(gray).astype(np.float32), pixels
    except ValueError as error:
        raise ApiError(422, f"{label}: {error}") from None


def decode_uploads(uploads: list[tuple[str, bytes]], max_pixels: int) -> np.ndarray:
    total = max_pixels * MAX_REQUEST_PIXELS_FACTOR
    budget, rows = total, []
    for index, (name, data) in enumerate(uploads):
        row, pixels = decode_upload(data, f"file[{index}] {name!r}", max_pixels)
        budget -= pixels
        if budget < 0:
            raise ApiError(413, f"images in one request exceed {total} pixels in all")
        rows.append(row)
    return np.stack(rows)


def parse_instances(body: bytes) -> np.ndarray:
    """JSON {"instances": [28x28 rows of 0..255, ...]} -> (N, 28, 28) float32, used as is."""
    try:
        document = json.loads(body, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ApiError(400, f"body is not valid JSON ({error})") from None
    if not isinstance(document, dict) or "instances" not in document:
        raise ApiError(422, 'JSON body must be an object with "instances"')
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise ApiError(
            422, '"instances" must be a non-empty list of '
            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} pixel arrays",
        )
    try:
        batch = np.asarray(instances)
    except (ValueError, TypeError):  # ragged nesting
        raise ApiError(
            422, f'"instances" must each be {IMAGE_SHAPE[0]} rows of {IMAGE_SHAPE[1]} pixels'
        ) from None
    if batch.dtype.kind not in "iuf":  # strings, null, booleans, objects, ragged lists
        raise ApiError(422, '"instances" pixel values must be numbers 0..255')
    if batch.ndim != 3 or batch.shape[1:] != IMAGE_SHAPE:
        raise ApiError(422, f'"instances" must have shape {BATCH_SHAPE}, got {tuple(batch.shape)}')
    if not np.isfinite(batch).all() or batch.min() < 0 or batch.max() > 255:
        raise ApiError(422, '"instances" pixel values must lie in 0..255 (MNIST format)')
    return batch.astype(np.float32)


def refuse_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity, which are not JSON and not pixels.
    raise ValueError(f"{name} is not a JSON number")


async def read_batch(request: Request, limits: Limits) -> np.ndarray:
    """The request's images or instances as one (N, 28, 28) float32 batch."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()  # BodyLimit stops it at the limit
    if not body:
        raise ApiError(400, "empty request body: send images as multipart field 'file' "
                       'or JSON {"instances": [...]}')
    if content_type == "application/json":
        return await run_in_threadpool(parse_instances, body)
    if content_type == "multipart/form-data":
        uploads = await read_uploads(request, limits)
        return await run_in_threadpool(decode_uploads, uploads, limits.max_pixels)
    raise ApiError(
        415,
        f"unsupported Content-Type {content_type or 'none'!r}: use multipart/form-data "
        "(field 'file') or application/json",
    )


async def read_uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    form = await request.form(max_files=limits.max_files, max_part_size=limits.max_body_bytes)
    files = form.getlist("file")
    if not files:
        raise ApiError(422, "multipart body has no field 'file' (one or more PNG/JPEG images)")
    uploads = []
    for index, upload in enumerate(files):
        if isinstance(upload, str):
            raise ApiError(422, f"file[{index}]: field 'file' must be a file upload, not text")
        uploads.append((upload.filename or "", await upload.read()))
    await form.close()
    return uploads


# --- body size ------------------------------------------------------------------------


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: refuse a body over the limit, by Content-Length up front and by the
    bytes actually received (a chunked body, or a lying header), before the app buffers it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = BodyTooLarge(self.max_bytes) if declared.isdigit() else ApiError(
                400, "invalid Content-Length header"
            )
            await error_response(error)(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

