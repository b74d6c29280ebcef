"""`digits schedule`: register a scheduled `retrain` deployment and run its flow runs here.

The one-process alternative to prefect.yaml + `make deploy` + `make worker`. prefect.yaml is
the one home of the schedule, tags and work pool; this module reads them from it. A
schedule needs a Prefect server that outlives this process (an ephemeral API dies with
it), so this refuses to start without PREFECT_API_URL. Prefect is imported inside functions.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from digits.errors import UsageError

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
DEPLOYMENT = "weekly"  # the deployment in prefect.yaml whose settings the CLI shares
NO_SERVER = (
    "digits schedule needs a Prefect server: start one with `make ui`, then "
    "export PREFECT_API_URL=http://127.0.0.1:4200/api"
)


@dataclass(frozen=True)
class DeploymentSettings:
    cron: str
    tags: list[str]
    pool: str


@cache
def deployment_settings() -> DeploymentSettings:
    """Schedule, tags and work pool of the `weekly` deployment in prefect.yaml."""
    import yaml  # installed with Prefect

    spec = yaml.safe_load(PREFECT_YAML.read_text())
    weekly = next(d for d in spec["deployments"] if d["name"] == DEPLOYMENT)
    return DeploymentSettings(
        cron=weekly["schedules"][0]["cron"], tags=weekly["tags"], pool=weekly["work_pool"]["name"]
    )


def check_cron(cron: str) -> str:
    """Refuse a bad cron expression before anything starts."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone="UTC")
    except ValueError:
        example = f"e.g. '{deployment_settings().cron}'"
        raise UsageError(f"--cron {cron!r} is not a cron expression ({example})") from None
    return cron


def check_server() -> str:
    """The configured API URL, once the server answers; UsageError (exit 2) otherwise."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise UsageError(NO_SERVER)
    with get_client(sync_client=True) as client:
        if client.api_healthcheck() is not None:
            raise UsageError(f"no Prefect server answers at {url}; start one with `make ui`")
    return url


def serve_retrain(name: str, cron: str, parameters: dict[str, Any]) -> None:
    """Block, running scheduled and manual runs of `retrain/NAME` one at a time, until Ctrl-C."""
    from prefect.schedules import Cron

    check_cron(cron)
    check_server()
    from flows.retrain import retrain  # TensorFlow loads only once the checks pass

    retrain.serve(
        name=name,
        schedule=Cron(cron, timezone="UTC"),
        parameters=parameters,
        tags=deployment_settings().tags,
        limit=1,  # this process runs one flow at a time
        global_limit=1,  # and the server queues a second run of this deployment
    )


if __name__ == "__main__":  # `python -m flows.schedule pool`: the Makefile's one source
    print(getattr(deployment_settings(), sys.argv[1]))
