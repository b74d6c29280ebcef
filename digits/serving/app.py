"""The HTTP service behind `digits serve`: predictions, the registry read-only, a web page.

A library module: it imports FastAPI but never Prefect or Great Expectations, and the model
runtime (Keras or onnxruntime) loads only when a model does. Contract (docs/architecture.md,
"The HTTP service"):

- The service serves the version its ref (an alias, usually `production`) points at and
  follows it: a background thread re-reads aliases.json every `poll_s` seconds and swaps
  in a new target only once it verified and answered a warm-up prediction. A target that
  fails keeps the old model in service; /readyz and the log say why.
- Bad input is a 4xx `{"error": "..."}` naming the problem, never a 500. Request paths and
  parameters never name a file: refs go through the registry's ref check, and the only
  version files served are the card and plots that the version's manifest lists.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from digits.config import IMAGE_SHAPE, NUM_CLASSES, PRODUCTION_ALIAS
from digits.errors import RegistryError
from digits.serving.predictor import load_predictor, normalize_image, to_grayscale
from digits.registry.store import CARD_FILE, Registry, check_ref

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 2_000_000
# Decoded size, checked from the header before any pixel is decoded: a few KB of PNG can
# claim gigapixels (a decompression bomb). 4096x4096 is far above any photo of one digit.
DEFAULT_MAX_PIXELS = 4096 * 4096
# Per request: many small bombs under the body limit must not add up to one big one.
MAX_REQUEST_PIXELS_FACTOR = 4
MAX_FILES = 1000
DEFAULT_POLL_S = 1.0  # how often aliases.json is re-read: well inside the 5 s promise
KEEP_LOADED = 2  # the version in service and the one before it
RETRY_FAILED_S = 30.0  # a target that failed to load is retried this often, not every poll
IMAGE_FORMATS = ["PNG", "JPEG"]  # the only decoders Pillow may try on a request's bytes

# The page's assets, read once from the package; a request picks one by name, never by path.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The only version files a request may read, and only when the manifest lists them.
SERVED_FILE_RE = re.compile(r"^(card\.md|plots/[A-Za-z0-9_.-]+\.png)$")
PAGE_HEADERS = {
    # Everything comes from this server: the page works offline and loads nothing else.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
    "X-Content-Type-Options": "nosniff",
}

log = logging.getLogger(__name__)


class Predictor(Protocol):
    """What digits.serving.predictor.load_predictor returns (tests pass stand-ins)."""

    version: str
    ref: str
    backend: str

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class ApiError(Exception):
    """A request the service refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- the model in service ------------------------------------------------------------


@dataclass
class Loaded:
    predictor: Predictor
    loaded_at: float  # time.time()


class ModelHolder:
    """The predictor in service for one ref, swapped only for a version that loaded."""

    def __init__(
        self,
        registry: Registry,
        ref: str,
        open_model: Callable[[Registry, str], Predictor] = load_predictor,
        retry_failed_s: float = RETRY_FAILED_S,
    ) -> None:
        self.registry = registry
        self.ref = ref
        self.open_model = open_model
        self.retry_failed_s = retry_failed_s
        self.loaded: Loaded | None = None  # replaced whole, so readers need no lock
        self.problem: str | None = "loading"  # why the ref's target is not (yet) in service
        self._failed: dict[str, float] = {}  # version -> when it last failed to load
        # The versions served last, kept loaded: a rollback then needs a verify, not a load
        # (loading a Keras-only version imports TensorFlow: seconds on a busy machine).
        self._recent: dict[str, Predictor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Load the ref's current target if it changed; keep the old model when it fails."""
        try:
            target = self.registry.resolve(self.ref)
        except RegistryError as error:
            self._report(f"cannot resolve {self.ref!r}: {error}")
            return
        if self.loaded and self.loaded.predictor.version == target:
            self.problem = None
            return
        failed_at = self._failed.get(target)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_failed_s:
            return
        try:
            predictor = self._recent.get(target)
            if predictor:
                self.registry.verify(target)  # its files must still match, as when loaded
            else:
                predictor = self.open_model(self.registry, target)
                warm_up(predictor)
        except Exception as error:  # a bad version must never stop the service
            self._failed[target] = time.monotonic()
            self._report(f"{self.ref} -> {target} not loaded: {error}")
            return
        previous = self.loaded.predictor.version if self.loaded else None
        self.loaded = Loaded(predictor, time.time())
        self._remember(predictor)
        self._failed.pop(target, None)
        self.problem = None
        log.info("serving %s (%s -> %s, was %s)", target, self.ref, target, previous or "none")

    def start(self, poll_s: float) -> None:
        self._thread = threading.Thread(
            target=self._follow, args=(poll_s,), name="digits-follow-alias", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def status(self) -> dict[str, Any]:
        loaded = self.loaded
        model = None
        if loaded:
            model = {
                "version": loaded.predictor.version,
                "ref": self.ref,
                "backend": loaded.predictor.backend,
                "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(loaded.loaded_at)),
            }
        return {"ready": loaded is not None, "model": model, "problem": self.problem}

    def _follow(self, poll_s: float) -> None:
        self.refresh()
        while not self._stop.wait(poll_s):
            self.refresh()

    def _remember(self, predictor: Predictor) -> None:
        recent = {v: p for v, p in self._recent.items() if v != predictor.version}
        recent[predictor.version] = predictor
        self._recent = dict(list(recent.items())[-KEEP_LOADED:])

    def _report(self, problem: str) -> None:
        serving = f"; still serving {self.loaded.predictor.version}" if self.loaded else ""
        if problem + serving != self.problem:  # once per new problem, not once per poll
            log.warning("%s%s", problem, serving)
        self.problem = problem + serving


def warm_up(predictor: Predictor) -> None:
    """One prediction before serving: builds the graph and proves the model answers."""
    probabilities = np.asarray(predictor.predict(np.zeros((1, *IMAGE_SHAPE), np.float32)))
    if probabilities.shape != (1, NUM_CLASSES):
        raise RegistryError(
            f"{predictor.version}: model answers shape {probabilities.shape}, "
            f"expected (1, {NUM_CLASSES})"
        )


# --- input --------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = MAX_FILES


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
            # Same steps as digits.serving.predictor.read_grayscale: EXIF rotation, then grayscale.
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
        raise ApiError(422, '"instances" must be a non-empty list of 28x28 pixel arrays')
    try:
        batch = np.asarray(instances)
    except (ValueError, TypeError):  # ragged nesting
        raise ApiError(422, '"instances" must each be 28 rows of 28 pixels') from None
    if batch.dtype.kind not in "iuf":  # strings, null, booleans, objects, ragged lists
        raise ApiError(422, '"instances" pixel values must be numbers 0..255')
    if batch.ndim != 3 or batch.shape[1:] != IMAGE_SHAPE:
        raise ApiError(
            422, f'"instances" must have shape (N, 28, 28), got {tuple(batch.shape)}'
        )
    if not np.isfinite(batch).all() or batch.min() < 0 or batch.max() > 255:
        raise ApiError(422, '"instances" pixel values must lie in 0..255 (MNIST format)')
    return batch.astype(np.float32)


def refuse_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity, which are not JSON and not pixels.
    raise ValueError(f"{name} is not a JSON number")


def classify(predictor: Predictor, batch: np.ndarray) -> list[dict[str, Any]]:
    probabilities = np.asarray(predictor.predict(batch), dtype=np.float64)
    return [
        {"digit": int(row.argmax()), "probabilities": [float(p) for p in row]}
        for row in probabilities
    ]


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


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=error.status)


# --- the app --------------------------------------------------------------------------


def create_app(
    registry: Registry | Path | str,
    ref: str = PRODUCTION_ALIAS,
    limits: Limits = Limits(),
    poll_s: float = DEFAULT_POLL_S,
    open_model: Callable[[Registry, str], Predictor] = load_predictor,
) -> FastAPI:
    """The service for `ref` in `registry`; the alias follower runs while the app does."""
    check_ref(ref)
    registry = registry if isinstance(registry, Registry) else Registry(registry)
    holder = ModelHolder(registry, ref, open_model)
    assets = read_assets()

    async def lifespan(app: FastAPI):
        holder.start(poll_s)
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(
        title="digits",
        summary="MNIST digit predictions from the model registry",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's docs page loads Swagger UI from a CDN: not offline
        redoc_url=None,
    )
    app.state.holder = holder
    add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        status = holder.status()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict:
        loaded = holder.loaded  # one model for the whole request, whatever the follower does
        if loaded is None:
            raise ApiError(503, f"no verified model loaded yet ({holder.problem})")
        batch = await read_batch(request, limits)
        predictions = await run_in_threadpool(classify, loaded.predictor, batch)
        return {
            "model": {"version": loaded.predictor.version, "ref": holder.ref},
            "predictions": predictions,
        }

    @app.get("/v1/models")
    def models() -> list:
        return registry_call(registry.versions)

    @app.get("/v1/models/{ref}")
    def model(ref: str) -> dict:
        return registry_call(registry.manifest, find_version(registry, ref))

    @app.get("/v1/models/{ref}/files/{name:path}")
    def model_file(ref: str, name: str) -> Response:
        return read_version_file(registry, find_version(registry, ref), name)

    @app.get("/")
    def page() -> Response:
        return asset_response(assets, "index.html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        return asset_response(assets, name)

    return app


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


def find_version(registry: Registry, ref: str) -> str:
    """The version a request's ref names: malformed -> 400, unknown -> 404."""
    try:
        check_ref(ref)
    except RegistryError as error:
        raise ApiError(400, str(error)) from None
    try:
        return registry.resolve(ref)
    except RegistryError as error:
        raise ApiError(404, str(error)) from None


def registry_call(function: Callable, *args) -> Any:
    try:
        return function(*args)
    except RegistryError as error:  # the registry on disk is broken, not the request
        raise ApiError(503, f"registry error: {error}") from None


def read_version_file(registry: Registry, version: str, name: str) -> Response:
    """The card or a plot of a version: only names its manifest lists, checked byte for byte."""
    if not SERVED_FILE_RE.match(name):
        raise ApiError(404, f"{name!r}: only {CARD_FILE} and plots/*.png are served")
    manifest = registry_call(registry.manifest, version)
    expected = manifest["files"].get(name)
    if expected is None:
        raise ApiError(404, f"{version} has no file {name!r}")
    path = registry.root / version / name
    try:
        data = b"" if path.is_symlink() else path.read_bytes()
    except OSError:
        data = b""
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise ApiError(503, f"{version}/{name} does not match its manifest checksum")
    media_type = "text/markdown; charset=utf-8" if name == CARD_FILE else "image/png"
    return Response(data, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})


def read_assets() -> dict[str, bytes]:
    folder = resources.files("digits.serving") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def asset_response(assets: dict[str, bytes], name: str) -> Response:
    if name not in assets:
        raise ApiError(404, f"no asset {name!r}")
    return Response(assets[name], media_type=ASSETS[name], headers=PAGE_HEADERS)


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON {"error": ...}; only a bug in this service is a 500."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own: unknown route (404), wrong method (405), malformed multipart (400).
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, 500)


# --- running ------------------------------------------------------------------------


def serve(
    registry: Path | str,
    ref: str = PRODUCTION_ALIAS,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: Limits = Limits(),
) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    app = create_app(registry, ref, limits)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the service has no authentication", host)
    uvicorn.run(app, host=host, port=port, log_config=log_config(), server_header=False)


def log_config() -> dict:
    """uvicorn's logging, plus our own `digits.*` lines in the same format."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["digits"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
