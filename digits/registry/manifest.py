"""The manifest: its one schema, the fields a training run knows, and the one JSON
serialisation of every registry file (manifests, aliases, history, the lock's holder record).

`manifest.schema.json` beside this file is the schema (JSON Schema 2020-12) and `Manifest`
the same description as a Python type; the registry validates against the schema when it
publishes (the run's fields, before touching anything) and whenever it reads a manifest,
so the card and `digits models` may rely on every required field. The registry adds
version, created_at, files and manifest_sha256; `describe` gives the rest.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Required, TypedDict

from digits.errors import RegistryError
from digits.registry.layout import MANIFEST_FILE, MODEL_FILE

if TYPE_CHECKING:  # types only: reading a manifest must not import Keras or scikit-learn
    from digits.config import TrainConfig
    from digits.data.ingest import Dataset
    from digits.model.evaluate import Evaluation, NewDataScore
    from digits.model.train import TrainedModel

SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
REGISTRY_FIELDS = ("version", "created_at", "files", "manifest_sha256")  # the registry's to add
DIGEST_KEY = "manifest_sha256"  # the manifest's own checksum: the one file `files` cannot list


class Metrics(TypedDict, total=False):
    accuracy: Required[float]  # 0..1, test split
    loss: float
    ece: float  # expected calibration error (digits.model.evaluate), as published
    ece_uncalibrated: float  # the same before the temperature
    not_a_digit_rate: float  # share of the test digits the version's not_a_digit rule flags
    per_class: list[dict]
    confusion: list[list[int]]  # rows: true digit, columns: predicted
    new_data: dict  # the same on the batches' pooled held-out images, + rows, production's


class FileEntry(TypedDict):
    sha256: str
    size: int


class Manifest(TypedDict, total=False):
    """`<registry>/vN/manifest.json`, as manifest.schema.json describes it."""

    version: Required[str]
    created_at: Required[str]
    model: Required[str]
    hyperparameters: dict
    training: dict
    metrics: Required[Metrics]
    threshold: float
    gate: dict
    data: dict  # source, sha256, rows, snapshot (MNIST hashes, batches, split rule)
    environment: dict[str, str]
    flow_run_id: str | None
    calibration: dict  # the temperature and its fit (digits.model.calibration.calibrate)
    not_a_digit: dict  # the rule and its threshold (digits.model.not_a_digit.fit_rule)
    exports: dict[str, dict]  # format -> file, rows, max_abs_diff, agree (digits.model.export)
    study: dict  # the Optuna study of a tuned model (digits.model.study_report.study_summary)
    files: Required[dict[str, FileEntry]]
    manifest_sha256: Required[str]


@functools.cache
def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def check_manifest(manifest: object, where: object, *, run_fields: bool = False) -> None:
    """Raise a one-line RegistryError naming `where` and the first field outside the schema.

    `run_fields`: check what a training run hands to publish, which lacks the fields the
    registry adds but must have every other required one.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    schema = load_schema()
    if run_fields:
        schema = {**schema, "required": [f for f in schema["required"] if f not in REGISTRY_FIELDS]}
    error = best_match(Draft202012Validator(schema).iter_errors(manifest))
    if error is not None:
        field = "/".join(map(str, error.absolute_path)) or "(top level)"
        message = error.message if len(error.message) <= 120 else error.message[:117] + "..."
        raise RegistryError(f"{where}: field {field}: {message} (see {SCHEMA_FILE.name})")


def check_files(files: object, manifest_path: Path) -> None:
    """`files` maps relative posix paths inside the version (fetch writes them) to checksums."""
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise RegistryError(f"{manifest_path}: `files` must list {MODEL_FILE}")
    for name, meta in files.items():
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or ".." in PurePosixPath(name).parts
            or PurePosixPath(name).as_posix() != name
            or name == MANIFEST_FILE
        ):
            raise RegistryError(f"{manifest_path}: unsafe file name {name!r} in `files`")
        if not (
            isinstance(meta, dict)
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("size"), int)
        ):
            raise RegistryError(f"{manifest_path}: `files` entry {name!r} needs sha256 and size")


# --- JSON ------------------------------------------------------------------------


def to_jsonable(value: object) -> object:
    """Let callers pass numpy scalars/arrays and paths without converting them first."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: object) -> bytes:
    """The one serialisation of registry JSON files, so manifests can be checked byte for byte."""
    try:
        text = json.dumps(value, indent=2, allow_nan=False, default=to_jsonable)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"manifest cannot be written as JSON: {error}") from error
    return (text + "\n").encode()


def parse_json(raw: bytes, path: Path) -> object:
    try:
        return json.loads(raw)
    except ValueError as error:  # also covers bytes that are not UTF-8
        raise RegistryError(f"{path}: not valid JSON ({error})") from error


def utc_now() -> str:
    """The one timestamp format of registry records (created_at, history, lock holder)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- what a run knows --------------------------------------------------------------


def environment() -> dict[str, str]:
    """Versions that decide whether a model loads and behaves the same elsewhere."""
    # The platform too: the pipeline installs on Linux x86_64/aarch64 and Apple silicon, with
    # other TensorFlow builds (tensorflow-cpu or tensorflow) and other kernels on each.
    versions = {"python": platform.python_version(),
                "platform": f"{platform.system()} {platform.machine()}"}
    for name in (
        "keras",
        "tensorflow-cpu",
        "tensorflow",
        "prefect",
        "great-expectations",
        "tf2onnx",  # wrote model.onnx
        "onnxruntime",  # checked it
    ):
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            continue
    # Another kernel library, other round-off: a retraining matches bit for bit only with the
    # same setting (unset: TensorFlow decides by the CPU).
    versions["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return versions


def describe(
    data: Dataset,
    trained: TrainedModel,
    config: TrainConfig,
    evaluation: Evaluation,
    threshold: float,
    flow_run_id: str | None,
    snapshot: dict | None = None,
    new_data: NewDataScore | None = None,
    rows: dict[str, int] | None = None,
) -> dict:
    metrics = evaluation.metrics()
    if new_data is not None:
        metrics["new_data"] = new_data.metrics()
    source = {"source": data.source, "sha256": data.sha256, "rows": rows or data.rows()}
    if snapshot is not None:
        source["snapshot"] = snapshot
    fits = {name: fit for name in ("calibration", "not_a_digit")
            if (fit := getattr(trained, name)) is not None}
    return {
        "model": config.model,
        "hyperparameters": asdict(config),
        "training": {
            "best_epoch": trained.best_epoch,
            "epochs_run": trained.epochs_run,
            "seconds": round(trained.seconds, 1),
        },
        "metrics": metrics,
        **fits,
        "threshold": threshold,
        "data": source,
        "environment": environment(),
        "flow_run_id": flow_run_id,
    }
