"""prefect.yaml on a test `prefect server` (tests/integration/conftest.py), as `make deploy`
registers it, and the flow runs of a deployment read back."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from flows.schedule import WEEKLY

POOL = WEEKLY.pool


def deploy_project(server) -> None:
    """`make deploy`: create the pool, deploy everything in prefect.yaml."""
    server.prefect("work-pool", "create", POOL, "--type", "process")
    Path(server.env["DIGITS_DATA"]).mkdir(parents=True, exist_ok=True)  # as `make deploy`
    # Like `make deploy`: DIGITS_PROJECT_DIR unset, so the pull step resolves it on the worker.
    server.prefect("--no-prompt", "deploy", "--all", unset=("DIGITS_PROJECT_DIR",))


def deployment_runs(server, deployment: UUID) -> list:
    """Every flow run of the deployment, scheduled ones included."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployments = DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
    with server.client() as client:
        return client.read_flow_runs(deployment_filter=deployments)


def deployed_parameters(server) -> dict:
    """The parameters prefect.yaml gives `retrain/weekly` when deployed with this server's
    environment: the folders `{{ $DIGITS_DATA }}` and `{{ $DIGITS_REGISTRY }}` name there."""
    return {"model": "cnn", "store_dir": server.env["DIGITS_DATA"],
            "registry": server.env["DIGITS_REGISTRY"]}


def redeploy(server, deployment: UUID, **parameters) -> None:
    """What an operator does by editing prefect.yaml's `parameters:` and deploying again:
    the deployment's own parameters, which its runs may not change (flows/deployed.py)."""
    from prefect.client.schemas.actions import DeploymentUpdate

    update = DeploymentUpdate(parameters={**deployed_parameters(server), **parameters})
    with server.client() as client:
        client.update_deployment(deployment, update)
