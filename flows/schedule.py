"""`digits schedule`: register a scheduled `retrain` deployment and run its flow runs here.

The one-process alternative to prefect.yaml + `make deploy` + `make worker`. `WEEKLY` is the
home of the schedule, tags and work pool that `digits run`, `digits schedule` and the
Makefile use: code, so an installed package has them wherever it runs, without a checkout;
`DAILY_DRIFT` and `ON_NEW_DATA` are prefect.yaml's drift schedule and new-data trigger.
`prefect deploy` reads the same from prefect.yaml, which tests/unit/test_settings.py holds
equal to these; `make deploy` fills in prefect.yaml's store and registry with `FOLDERS`.
A schedule needs a Prefect server that outlives this process (an
ephemeral API dies with it), so this refuses to start without PREFECT_API_URL. Prefect is
imported inside functions.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from typing import Any

from digits.environment import default_store_dir
from digits.errors import UsageError
from digits.registry.location import registry_location
from flows.events import ACCEPTED, STORE_LABEL

NO_SERVER = (
    "digits schedule needs a Prefect server: start one with `make ui`, then "
    "export PREFECT_API_URL=http://127.0.0.1:4200/api"
)


@dataclass(frozen=True)
class DeploymentSettings:
    name: str  # the deployment in prefect.yaml
    cron: str  # in UTC
    tags: tuple[str, ...]
    pool: str


# Mondays 03:00 UTC; the tags mark every retraining run in the UI, manual ones included.
WEEKLY = DeploymentSettings(
    name="weekly", cron="0 3 * * 1", tags=("digits", "mnist"), pool="digits-pool"
)
# Daily 04:00 UTC, after a Monday's retraining: `drift` compares the served traffic with MNIST.
DAILY_DRIFT = DeploymentSettings(
    name="daily-drift", cron="0 4 * * *", tags=("digits", "drift"), pool=WEEKLY.pool
)


@dataclass(frozen=True)
class TriggerSettings:
    """A deployment trigger that starts a run once a burst of events has ended."""

    name: str  # the automation prefect.yaml's trigger creates
    event: str  # what starts the wait
    quiet_s: int  # seconds with no further such event before the run starts (Prefect: >= 10)
    for_each: str  # resource label: each value waits on its own


# On `retrain/weekly`, so its concurrency limit covers both: a burst of accepted batches
# (ten in a minute) starts one retraining, a minute after the last, on all of them. It
# matches only its deployment's store, the one value of `for_each` it ever sees.
ON_NEW_DATA = TriggerSettings(
    name="retrain-on-new-data", event=ACCEPTED, quiet_s=60, for_each=STORE_LABEL
)
# prefect.yaml's `{{ $DIGITS_DATA }}` and `{{ $DIGITS_REGISTRY }}`, as `make deploy` fills
# them in: absolute and resolved as `digits add` resolves the store its events name.
FOLDERS = {"store": default_store_dir, "registry": registry_location}


def check_cron(cron: str) -> str:
    """Refuse a bad cron expression before anything starts."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone="UTC")
    except ValueError:
        example = f"e.g. '{WEEKLY.cron}'"
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

    # Prefect pauses the schedule on SIGTERM only once its runner has started; stopped
    # earlier (its handler exits at once, or Python's default kills), the schedule would
    # stay active with nothing serving it. So exit cleanly from the start, and pause here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        retrain.serve(
            name=name,
            schedule=Cron(cron, timezone="UTC"),
            parameters=parameters,
            tags=WEEKLY.tags,
            limit=1,  # this process runs one flow at a time
            global_limit=1,  # and the server queues a second run of this deployment
        )
    finally:
        pause_schedule(f"{retrain.name}/{name}")


def pause_schedule(deployment: str) -> None:
    """Pause `deployment` (flow/name) if it was registered; pausing twice is harmless."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.pause_deployment(client.read_deployment_by_name(deployment).id)
        except ObjectNotFound:
            pass  # stopped before it was registered: nothing to pause


if __name__ == "__main__":  # `python -m flows.schedule pool|store|registry`: for the Makefile
    what = sys.argv[1]
    print(FOLDERS[what]() if what in FOLDERS else getattr(WEEKLY, what))
