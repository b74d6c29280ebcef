"""The environment a process of the pipeline starts from, and the runtime's chatter kept out
of what a person reads (CLI, deploy, worker runs).

TensorFlow's C++ runtime writes straight to file descriptor 2, around Python's logging:
a start-up banner when it loads (`oneDNN custom operations`, `absl::InitializeLog`,
`cpu_feature_guard`) and, under op determinism, a harmless `E0000 ... use_unbounded_threadpool`
line from tf.data on every fit. Nothing here runs at import time.

`python -m digits.environment COMMAND ARGS...` runs COMMAND with the defaults applied (the
Makefile's targets do), so they are declared once, here: ENV_DEFAULTS.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from digits.config import DEFAULT_LOCK_TIMEOUT_S
from digits.errors import UsageError

# Seconds a Prefect API server may take to answer: its first start migrates the SQLite
# database, which takes a minute on a slow machine.
API_STARTUP_TIMEOUT_S = 90
# Set wherever the pipeline runs, unless the caller's environment already sets them: the
# `digits` command (default_environment), the Makefile's targets, benchmarks/run.py.
# prefect.yaml's worker env repeats the flow-run ones (tests/unit/test_settings.py).
ENV_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(API_STARTUP_TIMEOUT_S),
    "GX_ANALYTICS_ENABLED": "false",
    # C++ log level 3 hides TensorFlow's INFO, WARNING and ERROR lines; Python errors still
    # raise. ERROR too, because TF 2.21's tf.data logs its use_unbounded_threadpool mismatch
    # at ERROR. TF_CPP_MIN_LOG_LEVEL=0 shows everything.
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, BF16 or
    # AMX. On a 2-core AMD EPYC with AVX2 a default cnn training step took 0.70 of its time
    # without them (benchmarks/results.md); runs still repeat bit for bit. 0 turns them off.
    "TF_ENABLE_ONEDNN_OPTS": "1",
}
# PREFECT_HOME when unset: under the current folder, like the registry and data defaults, so
# `digits run`, `make run` and `make ui` in the project share one database.
PREFECT_HOME_DIR = ".prefect"

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
    """Import Keras (and TensorFlow) without the C++ start-up banner, so errors stay one line.

    Once imported, nothing is muted: another thread's writes to stderr (a server's log)
    would be lost while file descriptor 2 points at /dev/null."""
    if "keras" in sys.modules:
        return
    with muted_stderr():
        import keras  # noqa: F401


# --- Folders and numbers the environment names ----------------------------------------

Number = TypeVar("Number", int, float)

# The prediction log (`digits serve --log-dir`) that `feedback` and `drift` read by default.
LOG_DIR_ENV = "DIGITS_LOG_DIR"


def log_dir_of(path: str | Path | None = None) -> Path:
    """`path` if given, else `$DIGITS_LOG_DIR`; absolute. A UsageError when neither names one:
    unlike the registry, a log has no default folder (logging is off unless asked for)."""
    folder = path or os.environ.get(LOG_DIR_ENV)
    if not folder:
        raise UsageError(f"no prediction log: pass --log-dir DIR or set {LOG_DIR_ENV}")
    return Path(folder).expanduser().resolve()


def registry_root(path: str | Path | None = None) -> Path:
    """`path` if given, else `$DIGITS_REGISTRY`, else `artifacts/registry` here; absolute."""
    return Path(path or os.environ.get("DIGITS_REGISTRY", "artifacts/registry")).resolve()


def registry_cache(url: str, endpoint: str = "") -> Path:
    """Where verified copies of a store's versions are kept on this machine: per endpoint
    too, so two stores with the same bucket and prefix never share a copy."""
    base = os.environ.get("DIGITS_REGISTRY_CACHE") or Path.home() / ".cache/digits/registry"
    host = endpoint.split("://")[-1].strip("/").replace("/", "_").replace(":", "_") or "default"
    return Path(base).expanduser().resolve() / host / url.removeprefix("s3://").strip("/")


def env_number(name: str, default: Number, minimum: Number) -> Number:
    """`$name` as a number of `default`'s type (int or float), finite and at least `minimum`;
    `default` when unset. Any other value, empty included, is a usage error naming both."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or value < minimum:
        what = "an integer" if kind is int else "a number"
        raise UsageError(f"{name}={raw!r} must be {what} of at least {minimum}")
    return value


def lock_timeout() -> float:
    """Seconds a registry writer waits for the write lock: `$DIGITS_LOCK_TIMEOUT`, else 600."""
    return env_number("DIGITS_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT_S, minimum=0.0)


def default_store_dir() -> Path:
    """The batch store ($DIGITS_DATA, else ./data): batches/, quarantine/, and the cache of
    the verified MNIST download. `store_dir` names it everywhere; `data_dir` is only ever
    a folder of MNIST-format IDX files to train on instead of the download."""
    return Path(os.environ.get("DIGITS_DATA", "data")).resolve()


def default_artifacts_dir() -> Path:
    """Where per-run outputs that are not registry versions (GX Data Docs) live."""
    return Path(os.environ.get("DIGITS_ARTIFACTS", "artifacts")).resolve()


if __name__ == "__main__":
    default_environment()
    os.execvp(sys.argv[1], sys.argv[1:])
