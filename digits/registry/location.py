"""Where a registry lives: a folder, or `s3://BUCKET/PREFIX` on an S3-compatible store.

Every command, flow and loader opens its registry here, so `--registry`, `$DIGITS_REGISTRY`
and the Python API take either. The object store's client (boto3) is imported only when a
store is named: a folder registry never needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from digits.environment import registry_root

if TYPE_CHECKING:
    from digits.registry.remote import ObjectRegistry
    from digits.registry.store import Registry

    AnyRegistry = Union[Registry, ObjectRegistry]
else:
    AnyRegistry = object

STORE_SCHEME = "s3://"


def is_store_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(STORE_SCHEME)


def registry_location(location: str | Path | None = None) -> str | Path:
    """`location`, else `$DIGITS_REGISTRY`, else the default folder: an s3:// URL as given,
    a folder absolute (`digits.environment.registry_root`)."""
    chosen = location or os.environ.get("DIGITS_REGISTRY")
    return str(chosen) if is_store_url(str(chosen)) else registry_root(chosen)


def open_registry(
    location: AnyRegistry | str | Path | None = None, lock_timeout: float | None = None
) -> AnyRegistry:
    """The registry at `location` (a registry object is returned as it is)."""
    from digits.registry.remote import ObjectRegistry
    from digits.registry.store import Registry

    if isinstance(location, (Registry, ObjectRegistry)):
        return location
    where = registry_location(location)
    if is_store_url(where):
        return ObjectRegistry(where)
    return Registry(where, lock_timeout)
