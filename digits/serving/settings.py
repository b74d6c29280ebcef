"""The HTTP service's defaults and limits (docs/architecture.md, "The HTTP service").

Plain constants and one dataclass, without FastAPI or numpy: the command line imports them
for its `digits serve` defaults at no cost to its other commands.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_BYTES = 2_000_000
# Decoded size, checked from the header before any pixel is decoded: a few KB of PNG can
# claim gigapixels (a decompression bomb). 4096x4096 is far above any photo of one digit.
DEFAULT_MAX_PIXELS = 4096 * 4096
MAX_FILES = 1000
DEFAULT_POLL_S = 1.0  # how often aliases.json is re-read: well inside the 5 s promise


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_files: int = MAX_FILES
