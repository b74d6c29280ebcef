"""Export task: SavedModel and ONNX beside model.keras, checked against it before promotion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger

from tasks import stage


@stage("export")
def export(build_dir: Path, manifest: dict, images: np.ndarray) -> dict:
    """Write the exports into the candidate folder; return `manifest` with their parity record.

    Raises ExportError naming the format when one fails or disagrees: the run stops
    before promote, so the registry is unchanged.
    """
    from digits.model.export import export_candidate  # Keras: loaded by training already

    exports = export_candidate(build_dir, images)
    logger = get_run_logger()
    for name, record in exports.items():
        logger.info(
            "%s: %s agrees with model.keras on %d test digits (max difference %.1e), "
            "exported in %.2f s",
            name,
            record["file"],
            record["rows"],
            record["max_abs_diff"],
            record["export_seconds"],
        )
    return {**manifest, "exports": exports}
