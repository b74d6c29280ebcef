import os
from pathlib import Path

import pytest

from digits.registry.store import Registry
from tests.helpers.manifests import make_manifest


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A run folder to publish holding nothing but a (random) model file; modules that
    need more files define their own."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.keras").write_bytes(os.urandom(4096))
    return folder


@pytest.fixture
def registry(tmp_path: Path, source: Path) -> Registry:
    """A registry with `source` published as its first version; modules that need another
    registry define their own."""
    registry = Registry(tmp_path / "registry")
    registry.publish(source, make_manifest())
    return registry
