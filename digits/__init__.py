"""digits: the library under the pipeline. Plain Python a notebook or a serving process
can import without Prefect; each module imports only what its stage needs.

    import digits
    model = digits.load("production")          # or "v3", "latest"; registry= a folder
    model.predict(images)                      # (N, 28, 28) pixels 0..255 -> (N, 10)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digits.serving.predictor import Predictor

LATEST = "latest"  # the newest version, unless an alias of that name exists


def load(ref: str = "production", registry: Path | str | None = None) -> Predictor:
    """A verified registry version, ready to predict: `.version`, `.manifest`, `.predict()`.

    `registry` is the registry folder (default `$DIGITS_REGISTRY`, else
    `artifacts/registry`). An ONNX version runs on onnxruntime: neither TensorFlow nor
    Prefect is imported. Imports happen here, so `import digits` stays free.
    """
    from digits.config import registry_root
    from digits.registry.store import Registry
    from digits.serving.predictor import load_predictor

    store = Registry(registry_root(registry))
    if ref == LATEST and LATEST not in store.aliases():
        versions = store.versions()
        ref = versions[-1]["version"] if versions else ref  # an empty registry: unknown alias
    return load_predictor(ref, store)
