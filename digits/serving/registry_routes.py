"""The registry's metadata, read-only, under /v1/registry (/v1/models/{name} is TF Serving's):
the versions as `digits models --json` lists them, a version's manifest, and its card and
plots, only those its manifest lists and checked byte for byte. Absolute paths in them are
cut to their last part, a broken registry is a 503, and no answer names the server's files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from digits.errors import RegistryError
from digits.files import sha256_bytes
from digits.registry.aliases import check_ref
from digits.registry.layout import CARD_FILE
from digits.registry.location import AnyRegistry
from digits.registry.objects import StoreUnavailable
from digits.serving.errors import ApiError
from digits.serving.holder import hide_root
from digits.serving.openapi import errors, texts

# The only version files a request may read, and only when the manifest lists them.
SERVED_FILE_RE = re.compile(r"^(card\.md|plots/[A-Za-z0-9_.-]+\.png)$")

log = logging.getLogger(__name__)


def add_registry_routes(app: FastAPI, registry: AnyRegistry) -> None:
    """The registry's routes, answered from `registry`."""

    @app.get("/v1/registry/versions", responses=errors(503))
    def models() -> list:
        # What `digits models --json` prints, but where each version lies on the server.
        with registry_errors(registry):
            listed = registry.versions()
        return [hide_paths({k: v for k, v in entry.items() if k != "path"}) for entry in listed]

    @app.get("/v1/registry/versions/{ref}", responses=errors(400, 404, 503))
    def model(ref: str) -> dict:
        version = find_version(registry, ref)
        with registry_errors(registry):
            return hide_paths(registry.manifest(version))

    @app.get("/v1/registry/versions/{ref}/files/{name:path}", response_class=Response,
             responses={200: {"content": texts("text/markdown", png="image/png")},
                        **errors(400, 404, 503)})
    def model_file(ref: str, name: str) -> Response:
        return read_version_file(registry, find_version(registry, ref), name)


def hide_paths(value: Any) -> Any:
    """`value` with every absolute path (a --data-dir source, a study's storage) cut to its
    last part: clients see what a version was trained from, not the server's folders. The
    manifest in the registry keeps the full paths (and its digest)."""
    if isinstance(value, dict):
        return {key: hide_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [hide_paths(item) for item in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def find_version(registry: AnyRegistry, ref: str) -> str:
    """The version a request's ref names: malformed -> 400, unknown -> 404."""
    try:
        check_ref(ref)
    except RegistryError as error:
        raise ApiError(400, str(error)) from None
    try:
        return registry.resolve(ref)
    except RegistryError as error:
        raise ApiError(404, hide_root(str(error), registry.root)) from None


@contextmanager
def registry_errors(registry: AnyRegistry) -> Iterator[None]:
    """A broken registry on disk is a 503, not the request's fault; the log names the file."""
    try:
        yield
    except (RegistryError, StoreUnavailable) as error:  # damaged, or the store not answering
        log.warning("registry error: %s", error)
        raise ApiError(503, f"registry error: {hide_root(str(error), registry.root)}") from None


def read_version_file(registry: AnyRegistry, version: str, name: str) -> Response:
    """The card or a plot of a version: only names its manifest lists, checked byte for byte."""
    if not SERVED_FILE_RE.match(name):
        raise ApiError(404, f"{name!r}: only {CARD_FILE} and plots/*.png are served")
    with registry_errors(registry):
        manifest = registry.manifest(version)
    expected = manifest["files"].get(name)
    if expected is None:
        raise ApiError(404, f"{version} has no file {name!r}")
    with registry_errors(registry):
        data = registry.read_file(version, name)
    if sha256_bytes(data) != expected["sha256"]:
        raise ApiError(503, f"{version}/{name} does not match its manifest checksum")
    media_type = "text/markdown; charset=utf-8" if name == CARD_FILE else "image/png"
    return Response(data, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})
