"""The environment a process of the pipeline starts from, and the runtime's chatter kept out
of what a person reads (CLI, deploy, worker runs).

TensorFlow's C++ runtime writes straight to file descriptor 2, around Python's logging:
a start-up banner when it loads (`oneDNN custom operations`, `absl::InitializeLog`,
`cpu_feature_guard`) and, under op determinism, a harmless `E0000 ... use_unbounded_threadpool`
line from tf.data on every fit. Nothing here runs at import time.

`python -m digits.environment COMMAND ARGS...` runs COMMAND with the defaults applied (the
Makefile's targets do), so they are declared once, in digits.config.ENV_DEFAULTS.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from digits.config import ENV_DEFAULTS, PREFECT_HOME_DIR
from digits.errors import UsageError

# What `pip install 'digits[pipeline]'` adds to the consumer install (pyproject.toml).
PIPELINE_MODULES = ("prefect", "great_expectations", "keras", "tensorflow")
PIPELINE_HINT = "pip install 'digits[pipeline]'"


def default_environment() -> None:
    """ENV_DEFAULTS, and PREFECT_HOME under the current folder; the caller's env wins.

    Before Prefect, TensorFlow or GX import: each reads its settings once, when it loads.
    """
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # Absolute: Prefect would resolve a relative home against whatever folder it is in then.
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / PREFECT_HOME_DIR))


@contextmanager
def muted_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block; Python exceptions still raise.

    Only for imports: the banner is printed before any TensorFlow log setting applies.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def require_pipeline(command: str) -> None:
    """Refuse (exit 2, before anything starts) a command that trains or orchestrates where
    only the consumer side is installed: `pip install digits` without the extra."""
    if not all(importlib.util.find_spec(name) for name in PIPELINE_MODULES):
        raise UsageError(f"digits {command} needs the pipeline extra: {PIPELINE_HINT}")


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow) without the C++ start-up banner, so errors stay one line."""
    with muted_stderr():
        import keras  # noqa: F401


if __name__ == "__main__":
    default_environment()
    os.execvp(sys.argv[1], sys.argv[1:])
