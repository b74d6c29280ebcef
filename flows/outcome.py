"""What a run that trains a model decided, and how the UI and automations hear of it.

`retrain` and `tune` end the same way, so they share this module: the `Outcome` the CLI
prints, the `promoted`/`rejected`/`skipped` tag on the flow run and the
`digits.retrain.<kind>` event (one name for both flows, so one automation watches every
way a model reaches production; the payload names the flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import runtime
from prefect.states import Completed, State

from digits.registry.location import registry_location
from flows.events import emit, retrain_event

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

    def state(self) -> State:
        """The flow run's final state: Completed, with this outcome as its result."""
        return Completed(message=self.message(), data=self)


def skipped(version: str, threshold: float) -> Outcome:
    """A run with nothing new to learn: production already saw this data."""
    return Outcome(False, None, threshold, version, f"no new data since {version}", skipped=True)


def run_namer(prefix: str):
    """`prefix-MODEL-YYYY-MM-DD-HHMMSS`, a flow run name the UI lists."""

    def name_run() -> str:
        model = runtime.flow_run.parameters.get("model", "cnn")
        return f"{prefix}-{model}-{datetime.now(UTC):%Y-%m-%d-%H%M%S}"

    return name_run


def announce(kind: str, flow, flow_run, state: State, outcome: Outcome | None = None) -> None:
    """Emit `digits.retrain.<kind>` about the run's registry (flows/events.py)."""
    registry = registry_location(flow_run.parameters.get("registry"))
    emit(**retrain_event(kind, registry, {
        "flow": flow.name,
        "model": flow_run.parameters.get("model"),
        "flow_run": flow_run.name,
        "state": state.name,
        "message": state.message,
        "accuracy": outcome.accuracy if outcome else None,
        "threshold": outcome.threshold if outcome else None,
        "version": outcome.version if outcome else None,
    }))


def tag_outcome(flow_run, kind: str) -> None:
    """Add `promoted`, `rejected` or `skipped` to the run's tags: the UI's default views
    show plain `Completed` (they hide custom state names), and tags are on every run view."""
    from prefect.client.orchestration import get_client

    tags = [*flow_run.tags, kind]
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, tags=list(dict.fromkeys(tags)))


def announce_outcome(flow, flow_run, state: State) -> None:
    """on_completion hook: tag the run and emit `digits.retrain.promoted`, `.rejected` or
    `.skipped`. A run that decided nothing (`digits tune --no-promote`) announces nothing."""
    outcome = state.result(raise_on_failure=False)
    if not isinstance(outcome, Outcome):
        return
    announce(outcome.kind, flow, flow_run, state, outcome)  # first: alerts hang on it
    tag_outcome(flow_run, outcome.kind)


def announce_failure(flow, flow_run, state: State) -> None:
    """on_failure/on_crashed hook: `digits.retrain.failed` (invalid data, a bug, a lost worker)."""
    announce("failed", flow, flow_run, state)


# The hooks every model-producing flow carries, as keyword arguments of @flow.
OUTCOME_HOOKS = {
    "on_completion": [announce_outcome],
    "on_failure": [announce_failure],
    "on_crashed": [announce_failure],
}
