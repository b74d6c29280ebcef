"""What a run of a deployment may change (`retrain/weekly`, the runs its trigger starts,
`digits schedule`'s).

Prefect's open-source server asks nobody who they are: whoever reaches its API can start a
run of a deployment with parameters of their own, or emit the event that starts one. So a
deployment run learns from the deployment's data and promotes into its registry, as
deployed (prefect.yaml's `parameters:`, `make deploy`), and meets a gate no weaker than the
defaults (threshold at least 0.97, everywhere: digits.registry.gate.check_threshold;
regression tolerance at most 0.002, never off). It may still choose the model, its
settings (`train_overrides`), `force` and a stricter gate. A run started in this process
(`digits run`, a test) is someone at this machine, who chooses freely
(`--no-regression-check`, `--registry`). Prefect is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from digits.config import DEFAULT_REGRESSION_TOLERANCE
from digits.errors import UsageError

# Where a run's data come from and where its model goes: the deployment's, as deployed.
FIXED = ("data_dir", "store_dir", "registry", "min_train_rows")
UNFILLED = "{{"  # a `{{ $VAR }}` of prefect.yaml that `prefect deploy` had no value for


def check_deployment_run(run: dict) -> None:
    """UsageError (exit 2) naming each of `run`'s values (the flow's arguments) that a run
    of its deployment may not have; nothing outside a deployment run."""
    deployed = deployment_parameters()
    if deployed is None:
        return
    name, parameters = deployed
    refused = refused_parameters(run, parameters)
    if refused:
        raise UsageError(
            f"a run of {name} may not set {', '.join(refused)} (the deployment's folders and "
            f"a regression check no weaker than {DEFAULT_REGRESSION_TOLERANCE} are fixed; "
            "only `digits run` may choose them)")


def deployment_parameters() -> tuple[str, dict] | None:
    """`flow/deployment` and the parameters it was deployed with, in a run of one."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment, flow_run

    if deployment.id is None:
        return None
    with get_client(sync_client=True) as client:
        found = client.read_deployment(UUID(str(deployment.id)))
    return f"{flow_run.flow_name}/{found.name}", found.parameters


def refused_parameters(run: dict, deployed: dict) -> list[str]:
    """`name=value` for each value of `run` that a run of a deployment deployed with
    `deployed` may not have: folders other than its own, a weaker regression check."""
    refused = [f"{name}={run.get(name)}{unfilled(deployed.get(name))}" for name in FIXED
               if unfilled(deployed.get(name)) or normal(run.get(name)) != normal(
                   deployed.get(name))]
    tolerance = run.get("regression_tolerance")
    if tolerance is None or tolerance > DEFAULT_REGRESSION_TOLERANCE:
        refused.append(f"regression_tolerance={tolerance}")
    return refused


def normal(value):
    """Paths as the API holds them (text) and as the flow gets them (Path) compare equal."""
    return str(Path(value)) if isinstance(value, (str, Path)) else value


def unfilled(value) -> str:
    if isinstance(value, str) and UNFILLED in value:
        return (" (prefect.yaml's template, not filled in when deployed: `make deploy` sets "
                "DIGITS_DATA and DIGITS_REGISTRY)")
    return ""
