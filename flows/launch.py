"""Run one flow for a pipeline command of `digits` (digits/cli/pipeline.py imports this inside
its commands, so the command line imports flows, and Prefect, only when one runs)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from digits.environment import import_keras_quietly
from flows.api import local_api


def run_flow(entrypoint: str, tags: Sequence[str] = (), trains: bool = False,
             **parameters: Any) -> tuple[Any, Any]:
    """Run the flow `module:name` and return its final state and result.

    The API server starts first and boots while Prefect (and TensorFlow, for a flow that
    `trains`) import here; it stops before the command prints its last line, so that line
    is the last one. A flow that only checks data loads TensorFlow when it meets a model,
    and not at all while the registry has none. The result raises the run's DigitsError
    when the run failed.
    """
    module, name = entrypoint.split(":")
    with local_api() as wait_for_api:
        if trains:
            import_keras_quietly()
        from prefect import tags as run_tags

        flow = getattr(importlib.import_module(module), name)
        wait_for_api()
        with run_tags(*tags):
            state = flow(**parameters, return_state=True)
        return state, state.result()
