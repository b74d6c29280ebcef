import os
from pathlib import Path

import pytest


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A run folder to publish holding nothing but a (random) model file; modules that
    need more files define their own."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.keras").write_bytes(os.urandom(4096))
    return folder
