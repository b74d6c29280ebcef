"""The HTTP service's defaults and limits (docs/architecture.md, "The HTTP service").

Plain constants and one dataclass, without FastAPI or numpy: the command line imports them
for its `digits serve` defaults at no cost to its other commands.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 2_000_000
# An image's size, read from its header before any pixel is decoded: a few KB of PNG can
# claim gigapixels (a decompression bomb), and a PNG decodes whole before it can shrink, at
# up to 4 bytes a pixel. The model sees a 20x20 digit and the page sends 280x280; a 12 MP
# phone photo is also over the 2 MB body limit as a JPEG, so it has to be shrunk anyway.
DEFAULT_MAX_PIXELS = 2048 * 2048
# Images in one request, in any protocol (413 past it). Real batches fit: a 2 MB body holds
# ~700-1,000 real digits as JSON, and multipart took at most 1,000 files before. It bounds
# one request's work (~1.1 ms of model CPU an image, benchmarks/results.md) and its share of
# the prediction log (~1.4 KB an image): the flood sent 1,230 blank images a request.
DEFAULT_MAX_IMAGES = 1000
# A feedback body is an answer's id and a label, ~60 bytes: more is refused unparsed.
FEEDBACK_MAX_BYTES = 4096
# Requests reading or decoding their input at once: decoding is CPU-bound, so more than a
# few adds memory, not throughput. One image at the pixel limit peaks at ~40 MB (square) to
# ~105 MB (an 8208x511 strip, too thin to shrink), measured, plus the body.
DEFAULT_MAX_DECODES = 4
DEFAULT_DECODE_WAIT_S = 2.0  # how long a request waits for a decode slot before its 503
RETRY_AFTER_S = 1  # the 503's Retry-After: a slot frees in well under a second
# Processes answering requests (`digits serve --workers`). One by default: each worker loads
# the model (~110 MB with ONNX, ~600 MB for a Keras-only version) and follows the alias on
# its own; on 2 cores, 2 workers double the answers a second (benchmarks/results.md).
DEFAULT_WORKERS = 1
# How `digits serve --workers N` tells each worker what to serve: uvicorn starts workers as
# fresh processes that import the app factory, so the settings travel as JSON.
SETTINGS_ENV = "DIGITS_SERVE_SETTINGS"
# onnxruntime's threads for one request's images (1-4, ~1 ms each with the cnn): splitting
# so little work over two threads costs ~10-30% more CPU, measured, and workers, not
# threads, use the other cores.
MODEL_THREADS = 1
DEFAULT_POLL_S = 1.0  # how often aliases.json is re-read: well inside the 5 s promise
# The Host names a service bound to loopback answers to: any other name is a DNS-rebinding
# page's. Bound to anything else, the operator chose to expose it, under whatever name.
LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# The origins whose pages may call the service from a browser (`digits serve --cors-origin`):
# none by default, so only the service's own page may write. An origin, never "*": a
# wildcard would let every site's page in the operator's browser predict and send labels.
DEFAULT_CORS_ORIGINS: tuple[str, ...] = ()
CORS_MAX_AGE_S = 600  # how long a browser may keep a preflight's answer


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = DEFAULT_MAX_IMAGES
    max_decodes: int = DEFAULT_MAX_DECODES
    decode_wait_s: float = DEFAULT_DECODE_WAIT_S


def allowed_hosts(bind: str) -> tuple[str, ...]:
    """The Host headers answered when listening on `bind` (Starlette's TrustedHostMiddleware)."""
    return LOOPBACK_HOSTS if bind in LOOPBACK_BINDS else ("*",)


def check_origin(text: str) -> str:
    """`text` as a browser sends it in Origin (scheme://host[:port], lower case); ValueError
    for anything else: a path, a trailing slash, "*", another scheme."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number 0..65535
    except ValueError:
        raise ValueError(f"{text!r} is not an origin: http(s)://host[:port]") from None
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path
            or parts.query or parts.fragment or parts.username or parts.password):
        raise ValueError(f"{text!r} is not an origin: http(s)://host[:port], without a path "
                         "or trailing slash")
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class ServeSettings:
    """What one worker of `digits serve --workers N` serves: the command's options."""

    registry: str
    ref: str
    host: str
    limits: Limits = Limits()
    log_dir: str | None = None
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        fields = json.loads(text)
        return cls(**{**fields, "limits": Limits(**fields["limits"]),
                      "cors_origins": tuple(fields["cors_origins"])})
