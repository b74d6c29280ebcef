"""The `drift` flow: has the served traffic drifted from MNIST? (`digits drift`, and the
daily `daily-drift` deployment in prefect.yaml.)

Every parameter has a default that works on a worker: the log is $DIGITS_LOG_DIR, the
registry and MNIST the usual defaults. The run ends Completed with the TrafficDrift as its
result, or Failed with DriftFound when `fail_on_drift` and drift was found; either way it
publishes the `serving-drift` artifact and emits `digits.serving.drift` first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.states import Completed, Failed, State

from digits.checks.settings import BatchChecks
from digits.environment import log_dir_of
from digits.errors import ValidationFailed
from digits.monitoring.since import DEFAULT_DRIFT_SINCE, parse_since
from digits.monitoring.traffic import DriftChecks, TrafficDrift, answers_by_version, too_few
from digits.registry.location import open_registry
from flows.events import drift_event, emit
from tasks.drift import load_reference, measure, publish, read_traffic


class DriftFound(ValidationFailed):
    """--fail-on-drift and the traffic drifted: exit 4, as for data that failed its checks."""


def name_run() -> str:
    return f"drift-{datetime.now(UTC):%Y-%m-%d-%H%M%S}"


@flow(name="drift", flow_run_name=name_run, validate_parameters=False)
def drift(log_dir: Path | None = None, since: str = DEFAULT_DRIFT_SINCE,
          registry: str | Path | None = None, data_dir: Path | None = None,
          fail_on_drift: bool = False, config: DriftChecks | None = None) -> State:
    """Compare the images answered since `since` (a duration back from now, or an ISO date)
    with MNIST train, their answers with MNIST's class shares and the answering version's
    confidence on MNIST test; publish the verdict, table and histograms."""
    config = config or DriftChecks()
    folder, start = log_dir_of(log_dir), parse_since(since)
    logged = read_traffic(folder, start)
    traffic = None
    if len(logged) < config.min_images:  # before loading MNIST and the models: nothing to judge
        report = too_few(len(logged), start, answers_by_version(logged.versions), config)
    else:
        mnist = load_reference(Path(data_dir) if data_dir else None)
        report, traffic = measure(logged, mnist, open_registry(registry), start,
                                  BatchChecks(), config)
    publish(report, traffic, folder)
    announce(report, folder)
    if report.drifted and fail_on_drift:
        return Failed(message=report.line(), data=DriftFound(report.line()))
    return Completed(message=report.line(), data=report)


def announce(report: TrafficDrift, folder: Path) -> None:
    """Emit `digits.serving.drift` about the log's service; Prefect relates the flow run."""
    emit(**drift_event(folder, {**report.payload(), "line": report.line(),
                                "log_dir": str(folder)}))
