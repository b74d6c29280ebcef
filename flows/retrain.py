"""The `retrain` flow: a thin recipe that runs the stages in order."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, runtime
from prefect.events import emit_event
from prefect.states import Completed, Failed, State

from digits.config import (
    DEFAULT_REGRESSION_TOLERANCE,
    DEFAULT_THRESHOLD,
    MNIST_ROWS,
    ValidationConfig,
    default_artifacts_dir,
    default_data_dir,
    registry_root,
    train_config,
)
from digits.errors import DataError
from digits.registry.gate import GateRule, check_threshold
from digits.data.snapshot import run_settings, union_checks
from flows.quiet import muted_stderr

if TYPE_CHECKING:
    from digits.model.evaluate import NewDataScore

# `prefect deploy` and every worker's flow run import this module: the tasks load Keras, whose
# C++ start-up banner would go straight to their terminals (`digits run` mutes it likewise).
with muted_stderr():
    from tasks.evaluate import evaluate, evaluate_new_data
    from tasks.export import export
    from tasks.ingest import ingest
    from tasks.preprocess import preprocess
    from tasks.promote import package, promote
    from tasks.snapshot import snapshot, unchanged_since, union
    from tasks.train import train
    from tasks.validate import validate_processed, validate_raw

OUTCOME_TAGS = ("promoted", "rejected", "skipped")  # the UI shows tags on every run view


@dataclass(frozen=True)
class Outcome:
    """What a run decided; the CLI prints it and maps it to an exit code."""

    promoted: bool
    accuracy: float | None  # None for a skip: nothing was trained
    threshold: float
    version: str | None  # the promoted version; for a skip, the production it matched
    reason: str
    skipped: bool = False  # nothing new since production: not trained, registry untouched

    @property
    def kind(self) -> str:
        """`promoted`, `rejected` or `skipped`: the run's tag and event name."""
        return "skipped" if self.skipped else OUTCOME_TAGS[0 if self.promoted else 1]

    def line(self) -> str:
        """The CLI's last line (a contract): `promoted vN (accuracy A)`, `rejected (...)`
        or `skipped: no new data since vN`."""
        if self.skipped:
            return f"skipped: {self.reason}"
        if self.promoted:
            return f"promoted {self.version} (accuracy {self.accuracy:.4f})"
        return f"rejected ({self.reason}); registry unchanged"

    def message(self) -> str:
        """The state message: the line plus what the gate compared, for promotions too."""
        if self.skipped:
            return f"Skipped: {self.reason}"
        return f"{self.line()}: {self.reason}" if self.promoted else self.line()


def name_run() -> str:
    model = runtime.flow_run.parameters.get("model", "cnn")
    return f"retrain-{model}-{datetime.now(timezone.utc):%Y-%m-%d-%H%M%S}"


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


def tag_outcome(flow_run, kind: str) -> None:
    """Add `promoted`, `rejected` or `skipped` to the run's tags: the UI's default views
    show plain `Completed` (they hide custom state names), and tags are on every run view."""
    from prefect.client.orchestration import get_client

    tags = [*flow_run.tags, kind]
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=list(dict.fromkeys(tags)))


def announce_outcome(flow, flow_run, state: State) -> None:
    """on_completion hook: tag the run and emit `digits.retrain.promoted`, `.rejected` or
    `.skipped`."""
    outcome = state.result(raise_on_failure=False)
    if not isinstance(outcome, Outcome):  # a completed run always returns one; be safe in a hook
        outcome = None
    kind = outcome.kind if outcome else "rejected"
    announce(kind, flow_run, state, outcome)  # first: alerts hang on it
    tag_outcome(flow_run, kind)


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
    train_overrides: dict[str, Any] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    regression_tolerance: float | None = DEFAULT_REGRESSION_TOLERANCE,
    data_dir: str | None = None,
    registry: str | None = None,
    min_train_rows: int | None = None,
    progress: bool = False,
    force: bool = False,
) -> State:
    """Ingest, validate, preprocess, train, evaluate, gate and promote one model.

    `train_overrides` replaces fields of the model's default `TrainConfig` (epochs,
    batch_size, learning_rate, seed, ...); see `digits run --help`. The run trains on MNIST
    plus every accepted batch; when that data and these settings equal production's it
    ends at once, "Skipped: no new data since vN", unless `force`.
    """
    check_threshold(threshold)
    config = train_config(model, **(train_overrides or {}))
    source = Path(data_dir).resolve() if data_dir else None
    checks = validation_checks(source, min_train_rows)
    docs_dir = default_artifacts_dir() / "gx"
    store, root = default_data_dir(), registry_root(registry)
    try:
        data = ingest(source, store)
        batches, snap = snapshot(data, store)
        settings = run_settings(config, threshold, regression_tolerance)
        same_as = None if force else unchanged_since(root, snap, settings)
        if same_as:  # before validation and training: a scheduled run with nothing new
            return skip(same_as, threshold)
        validate_raw(data, checks, docs_dir)
        train_set, new, rows = union(data, batches)
        splits = preprocess(train_set, config.validation_size, config.seed)
        validate_processed(splits, union_checks(checks, rows), docs_dir)
    except DataError as error:
        return Failed(message=str(error), data=error)

    trained = train(splits, config, progress=progress)
    with tempfile.TemporaryDirectory(prefix="digits-build-") as build:
        plots = Path(build) / "plots"
        evaluation = evaluate(trained, data.test_images, data.test_labels, plots)
        scored = evaluate_new_data(trained, new, root, plots / "new_data")
        manifest = package(
            Path(build), data, trained, config, evaluation, threshold, snap, scored, rows
        )
        manifest = export(Path(build), manifest, data.test_images)
        terms = new_data_terms(scored)
        rule = GateRule(evaluation.accuracy, threshold, regression_tolerance, *terms)
        decision, version = promote(root, Path(build), manifest, rule)
    outcome = Outcome(decision.promote, evaluation.accuracy, threshold, version, decision.reason)
    return Completed(message=outcome.message(), data=outcome)


def validation_checks(source: Path | None, min_train_rows: int | None) -> ValidationConfig:
    """The pinned MNIST must have its exact row counts; a --data-dir folder a minimum."""
    return ValidationConfig(
        exact_rows=None if source else MNIST_ROWS,
        **({"min_train_rows": min_train_rows} if min_train_rows else {}),
    )


def skip(version: str, threshold: float) -> State:
    """The state of a run with nothing new to learn: Completed, tagged `skipped`."""
    reason = f"no new data since {version}"
    outcome = Outcome(False, None, threshold, version, reason, skipped=True)
    return Completed(message=outcome.message(), data=outcome)


def new_data_terms(scored: NewDataScore | None) -> tuple:
    """GateRule's new-data fields: the challenger's accuracy, production's as re-scored."""
    if scored is None:
        return ()
    accuracy = scored.evaluation.accuracy
    return accuracy, scored.production_version, scored.production_accuracy
