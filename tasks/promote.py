"""Package and promote tasks: the candidate folder, then gate and publish in one transaction."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import get_run_logger, runtime

from digits.config import TrainConfig
from digits.data.ingest import Dataset
from digits.registry.gate import Decision, GateRule
from digits.registry.layout import MODEL_FILE
from digits.registry.location import open_registry
from digits.registry.manifest import describe
from tasks import stage

if TYPE_CHECKING:  # the model's modules load Keras: loaded by training already
    from digits.model.evaluate import Evaluation, NewDataScore
    from digits.model.train import TrainedModel


@stage("package")
def package(
    build_dir: Path,
    data: Dataset,
    trained: TrainedModel,
    config: TrainConfig,
    evaluation: Evaluation,
    threshold: float,
    snapshot: dict | None = None,
    new_data: NewDataScore | None = None,
    rows: dict[str, int] | None = None,
) -> dict:
    """Save the model beside the evaluation plots in `build_dir`; return its manifest fields."""
    trained.model.save(build_dir / MODEL_FILE)
    run_id = runtime.flow_run.id
    return describe(
        data, trained, config, evaluation, threshold, str(run_id) if run_id else None,
        snapshot=snapshot, new_data=new_data, rows=rows,
    )


@stage("promote", run_name="gate-and-promote")
def promote(
    registry: Path, build_dir: Path, manifest: dict, rule: GateRule
) -> tuple[Decision, str | None]:
    """The only task that writes to the registry, and only if the gate passes under its lock."""
    decision, version = open_registry(registry).promote_if(build_dir, manifest, rule)
    logger = get_run_logger()
    if version:
        logger.info("promote %s to production: %s", version, decision.reason)
    else:
        logger.info("reject: %s; registry unchanged", decision.reason)
    return decision, version
