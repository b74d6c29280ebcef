"""A prediction request's input: images or JSON instances (digits.serving.documents),
read and decoded within the limits, a few requests at a time.

Bad input is an `ApiError`, a 4xx `{"error": "..."}` naming the problem, never a 500.
"""

from __future__ import annotations

import io
from contextlib import ExitStack

import anyio
import numpy as np
from fastapi import Request
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from digits.data.images import IMAGE_FORMATS, SHRINK_MIN_SIDE, shrink, to_grayscale
from digits.data.normalize import normalize_image
from digits.serving.documents import parse_instances
from digits.serving.errors import ApiError, error_response
from digits.serving.settings import RETRY_AFTER_S, Limits

MAX_REQUEST_PIXELS_FACTOR = 4  # a request's images together: 4 at the per-image limit
# Work this small is done on the event loop: a hop to the thread pool and back costs ~0.5 ms
# here, a quarter of decoding the drawing page's 280x280 canvas (~2 ms), and the event loop
# only waits that long. Anything larger is decoded in the thread pool, which keeps the loop
# answering (/healthz, /metrics) while a photo is shrunk.
INLINE_DECODE_PIXELS = 320 * 320
INLINE_JSON_BYTES = 32_000  # a few images as JSON: parsed in well under a millisecond


# --- the body's content ---------------------------------------------------------------


def open_upload(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """PNG/JPEG bytes opened: only the header is read, and an oversized image is refused."""
    if not data:
        raise ApiError(422, f"{label}: empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ApiError(422, f"{label}: not a PNG or JPEG image") from None
    except Image.DecompressionBombError as error:
        raise ApiError(413, f"{label}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise corrupt(label, error) from None
    if image.width * image.height > max_pixels:
        image.close()
        raise ApiError(
            413,
            f"{label}: {image.width}x{image.height} pixels is over the limit of {max_pixels} "
            "pixels: send a smaller or cropped image",
        )
    return image


def decode_image(image: Image.Image, label: str) -> np.ndarray:
    """An opened image -> (28, 28) float32 MNIST pixels, the way `digits predict` reads a file."""
    try:
        with image:  # closing frees the decoded pixels before the next image is decoded
            # As digits.data.images.read_grayscale reads a file: shrunk right after loading,
            # before any conversion, then EXIF rotation, then grayscale. In place: without a
            # rotation to apply, exif_transpose would return a copy.
            small = shrink(image, SHRINK_MIN_SIDE)
            ImageOps.exif_transpose(small, in_place=True)
            gray = to_grayscale(small)
    except (OSError, SyntaxError, ValueError) as error:
        raise corrupt(label, error) from None
    try:
        return normalize_image(gray).astype(np.float32)
    except ValueError as error:
        raise ApiError(422, f"{label}: {error}") from None


def corrupt(label: str, error: Exception) -> ApiError:
    return ApiError(422, f"{label}: corrupt or truncated image ({error})")  # Pillow's words


def decode_uploads(uploads: list[tuple[str, bytes]], max_pixels: int) -> np.ndarray:
    """Every header is read and checked, each image's and all of them together, before any
    image is decoded: many small bombs under the body limit must not add up to one big one."""
    with ExitStack() as opened:
        return decode_all(open_uploads(uploads, max_pixels, opened))


async def decode_uploads_in_turn(uploads: list[tuple[str, bytes]], max_pixels: int) -> np.ndarray:
    """decode_uploads, on the event loop for small images and in the thread pool otherwise:
    the headers say which before any pixel is decoded."""
    with ExitStack() as opened:
        images = open_uploads(uploads, max_pixels, opened)
        if sum(image.width * image.height for image, _ in images) <= INLINE_DECODE_PIXELS:
            return decode_all(images)
        return await run_in_threadpool(decode_all, images)


def open_uploads(
    uploads: list[tuple[str, bytes]], max_pixels: int, opened: ExitStack
) -> list[tuple[Image.Image, str]]:
    """Each upload opened (its header read and checked) with its label, closed by `opened`."""
    total = max_pixels * MAX_REQUEST_PIXELS_FACTOR
    labels = [f"file[{index}] {name!r}" for index, (name, _) in enumerate(uploads)]
    images = [
        (opened.enter_context(open_upload(data, label, max_pixels)), label)
        for label, (_, data) in zip(labels, uploads)
    ]
    if sum(image.width * image.height for image, _ in images) > total:
        raise ApiError(413, f"images in one request exceed {total} pixels in all")
    return images


def decode_all(images: list[tuple[Image.Image, str]]) -> np.ndarray:
    return np.stack([decode_image(image, label) for image, label in images])


async def read_batch(request: Request, limits: Limits) -> np.ndarray:
    """The request's images or instances as one (N, 28, 28) float32 batch."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()  # BodyLimit stops it at the limit
    if not body:
        raise ApiError(400, "empty request body: send images as multipart field 'file' "
                       'or JSON {"instances": [...]}')
    if content_type == "application/json":
        if len(body) <= INLINE_JSON_BYTES:
            return parse_instances(body, limits.max_images)
        return await run_in_threadpool(parse_instances, body, limits.max_images)
    if content_type == "multipart/form-data":
        uploads = await read_uploads(request, limits)
        return await decode_uploads_in_turn(uploads, limits.max_pixels)
    raise ApiError(
        415,
        f"unsupported Content-Type {content_type or 'none'!r}: use multipart/form-data "
        "(field 'file') or application/json",
    )


async def read_uploads(request: Request, limits: Limits) -> list[tuple[str, bytes]]:
    form = await read_form(request, limits)
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


async def read_form(request: Request, limits: Limits) -> FormData:
    """The multipart form, its file parts at most `max_images` (Starlette stops at one more)."""
    try:
        return await request.form(max_files=limits.max_images,
                                  max_part_size=limits.max_body_bytes)
    except HTTPException as error:  # Starlette's 400 for a malformed or too large form
        if str(error.detail).startswith("Too many files"):
            raise ApiError(413, f"more than {limits.max_images} images: over the limit of "
                           f"{limits.max_images} images per request; send them in several "
                           "requests") from None
        raise


# --- how many at once -----------------------------------------------------------------


class DecodeSlots:
    """At most `max_decodes` requests read and decode their input at once, which bounds the
    service's memory; one more waits up to `decode_wait_s` for a slot, then gets a 503."""

    def __init__(self, limits: Limits) -> None:
        self.semaphore = anyio.Semaphore(limits.max_decodes)
        self.limits = limits

    async def __aenter__(self) -> None:
        with anyio.move_on_after(self.limits.decode_wait_s) as waiting:
            await self.semaphore.acquire()
        if waiting.cancelled_caught:
            raise ApiError(
                503,
                f"busy: {self.limits.max_decodes} requests are being decoded; "
                f"retry in {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )

    async def __aexit__(self, *exc_info) -> None:
        self.semaphore.release()


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

