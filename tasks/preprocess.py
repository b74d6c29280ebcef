"""Preprocess task: scale pixels and carve the validation split (digits.data.splits)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from digits.data.ingest import Dataset
from digits.data.splits import Splits, preprocess_data


@task(name="preprocess", task_run_name="preprocess", cache_policy=NONE, persist_result=False)
def preprocess(data: Dataset, validation_size: int, seed: int) -> Splits:
    return preprocess_data(data, validation_size, seed)
