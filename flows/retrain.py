"""The `retrain` flow: a thin recipe that runs the stages in order."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, runtime
from prefect.events import emit_event
from prefect.states import Completed, Failed, State

from tasks.config import (
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    MNIST_ROWS,
    ValidationConfig,
    default_artifacts_dir,
    default_data_dir,
    registry_root,
    train_defaults,
)
from tasks.errors import DataError
from tasks.evaluate import evaluate
from tasks.gate import Decision, check_threshold, gate, promote
from tasks.ingest import Dataset, ingest
from tasks.preprocess import preprocess
from tasks.train import TrainedModel, train
from tasks.validate import validate_processed, validate_raw


@dataclass(frozen=True)
class Outcome:
    """What a run decided; the CLI prints it and maps it to an exit code."""

    promoted: bool
    accuracy: float
    threshold: float
    version: str | None
    reason: str

    def line(self) -> str:
        if self.promoted:
            return f"promoted {self.version} (accuracy {self.accuracy:.4f})"
        return f"rejected ({self.reason}); registry unchanged"


def name_run() -> str:
    model = runtime.flow_run.parameters.get("model", "cnn")
    return f"retrain-{model}-{datetime.now(timezone.utc):%Y-%m-%d-%H%M%S}"


def describe(data: Dataset, trained: TrainedModel, config, metrics: dict, threshold: float) -> dict:
    """The manifest fields the flow knows; the registry adds version, dates and checksums."""
    return {
        "model": config.model,
        "hyperparameters": asdict(config),
        "training": {"best_epoch": trained.best_epoch, "seconds": round(trained.seconds, 1),
                     "epochs_run": trained.epochs_run},
        "metrics": metrics,
        "threshold": threshold,
        "data": {"source": data.source, "sha256": data.sha256, "rows": data.rows()},
        "flow_run_id": str(runtime.flow_run.id) if runtime.flow_run.id else None,
    }


def registry_resource(flow_run) -> dict[str, str]:
    """The registry a run reports on, as an event resource automations can match."""
    root = registry_root(flow_run.parameters.get("registry"))
    return {"prefect.resource.id": f"digits.registry.{root}", "prefect.resource.name": str(root)}


def announce(kind: str, flow_run, state: State, outcome: Outcome | None = None) -> None:
    """Emit `digits.retrain.<kind>`; Prefect adds the flow run, deployment and tags as related."""
    emit_event(
        event=f"digits.retrain.{kind}",
        resource=registry_resource(flow_run),
        payload={
            "model": flow_run.parameters.get("model"),
            "flow_run": flow_run.name,
            "state": state.name,
            "message": state.message,
            "accuracy": outcome.accuracy if outcome else None,
            "threshold": outcome.threshold if outcome else None,
            "version": outcome.version if outcome else None,
        },
    )


def announce_outcome(flow, flow_run, state: State) -> None:
    """on_completion hook: `digits.retrain.promoted` or `digits.retrain.rejected`."""
    outcome = state.result(raise_on_failure=False)
    if not isinstance(outcome, Outcome):  # a completed run always returns one; be safe in a hook
        outcome = None
    promoted = outcome.promoted if outcome else state.name == "Promoted"
    announce("promoted" if promoted else "rejected", flow_run, state, outcome)


def announce_failure(flow, flow_run, state: State) -> None:
    """on_failure/on_crashed hook: `digits.retrain.failed` (invalid data, a bug, a lost worker)."""
    announce("failed", flow_run, state)


# No flow retries: ingest retries its own downloads, and a rejected model or invalid data
# would end the same way again. Deployment tags, schedule and concurrency live in prefect.yaml.
@flow(
    name="retrain",
    flow_run_name=name_run,
    log_prints=True,
    on_completion=[announce_outcome],
    on_failure=[announce_failure],
    on_crashed=[announce_failure],
)
def retrain(
    model: str = "cnn",
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    seed: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    regression_tolerance: float | None = DEFAULT_REGRESSION_TOLERANCE,
    data_dir: str | None = None,
    registry: str | None = None,
    min_train_rows: int | None = None,
    progress: bool = False,
) -> State:
    """Ingest, validate, preprocess, train, evaluate, gate and promote one model."""
    check_threshold(threshold)
    config = train_defaults(model).with_overrides(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed
    )
    registry_dir = registry_root(registry)
    source = Path(data_dir).resolve() if data_dir else None
    checks = ValidationConfig(
        exact_rows=None if source else MNIST_ROWS,
        **({"min_train_rows": min_train_rows} if min_train_rows else {}),
    )
    docs_dir = default_artifacts_dir() / "gx"
    try:
        data = ingest(source, default_data_dir())
        validate_raw(data, checks, docs_dir)
        splits = preprocess(data, config.validation_size, config.seed)
        validate_processed(splits, checks, docs_dir)
    except DataError as error:
        message = str(error)
        if not message.startswith("data validation failed"):
            message = f"data validation failed: {message}"
        return Failed(message=message, data=DataError(message))

    trained = train(splits, config, progress=progress)
    with tempfile.TemporaryDirectory(prefix="digits-build-") as build:
        build_dir = Path(build)
        trained.model.save(build_dir / "model.keras")
        evaluation, _plots = evaluate(
            trained.model, data.test_images, data.test_labels, trained.history, build_dir / "plots"
        )
        decision: Decision = gate(
            evaluation.accuracy, threshold, registry_dir, regression_tolerance
        )
        version = None
        if decision.promote:
            manifest = describe(data, trained, config, evaluation.metrics(), threshold)
            version = promote(registry_dir, build_dir, manifest, decision)
    outcome = Outcome(decision.promote, evaluation.accuracy, threshold, version, decision.reason)
    return Completed(
        name="Promoted" if decision.promote else "Rejected", message=outcome.line(), data=outcome
    )
