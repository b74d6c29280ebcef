"""Keep the runtime's own chatter out of what a person reads: CLI, deploy, worker runs.

TensorFlow's C++ runtime writes straight to file descriptor 2, around Python's logging:
a start-up banner when it loads (`oneDNN custom operations`, `absl::InitializeLog`,
`cpu_feature_guard`) and, under op determinism, a harmless `E0000 ... use_unbounded_threadpool`
line from tf.data on every fit. Nothing here runs at import time.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

# C++ log level 3 hides TensorFlow's INFO, WARNING and ERROR lines; Python errors still raise.
# ERROR too, because TF 2.21's tf.data logs its use_unbounded_threadpool mismatch at ERROR.
# The caller's environment wins (TF_CPP_MIN_LOG_LEVEL=0 to see everything).
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "GX_ANALYTICS_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def quiet_environment() -> None:
    """Defaults that keep a local run self-contained and readable; the caller's env wins."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


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


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow) without the C++ start-up banner, so errors stay one line."""
    with muted_stderr():
        import keras  # noqa: F401
