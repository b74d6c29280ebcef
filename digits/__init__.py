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
    from digits.registry.load import Predictor


def load(ref: str = "production", registry: Path | str | None = None) -> Predictor:
    """A verified registry version, ready to predict: `.version`, `.manifest`, `.predict()`.

    `registry` is the registry folder (default `$DIGITS_REGISTRY`, else
    `artifacts/registry`); `ref` a version, an alias, or "latest" (the newest version). An
    ONNX version runs on onnxruntime: neither TensorFlow nor Prefect is imported. Imports
    happen here, so `import digits` stays free.
    """
    from digits.registry import load as loader

    return loader.load(ref, registry)
