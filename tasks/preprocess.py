"""Preprocess task: scale pixels and carve the validation split (digits.data.splits)."""

from __future__ import annotations

from digits.data.ingest import Dataset
from digits.data.splits import Splits, preprocess_data
from tasks import stage


@stage("preprocess")
def preprocess(data: Dataset, validation_size: int, seed: int) -> Splits:
    return preprocess_data(data, validation_size, seed)
