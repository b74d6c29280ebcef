"""The Prefect tasks, a module per pipeline step holding its stages: thin wrappers that call
the library, name the task run and publish artifacts. Every one is declared with `stage`."""

from __future__ import annotations

from typing import Any


def stage(name: str, run_name: Any = None, **options: Any):
    """`@task` for a stage of the pipeline: `name` in the UI (and as the run's name unless
    `run_name`, a string or a function of the arguments, says otherwise), never cached and
    its result never persisted. Stages hand each other arrays of 60000x784: a cache key on
    the inputs would hash them, a persisted result would write them (docs/architecture.md).
    Prefect is imported here, when a task module declares its stages, not with the package."""
    from prefect import task
    from prefect.cache_policies import NONE

    return task(name=name, task_run_name=run_name or name, cache_policy=NONE,
                persist_result=False, **options)
