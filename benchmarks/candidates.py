"""The training configurations issue 19 compares: a name each, as `train_config` overrides.

`reference` is the default cnn before issue 19; every other row changes a lever or two.
"""

from __future__ import annotations

from digits.config import TrainConfig, train_config

CANDIDATES: dict[str, dict] = {
    "reference": {"model": "cnn"},
    "reference-b256": {"model": "cnn", "batch_size": 256},
    "width16": {"model": "cnn", "width": 16},
    "strided": {"model": "cnn", "stem": "strided"},
    "strided-b256": {"model": "cnn", "stem": "strided", "batch_size": 256},
    "strided-w48": {"model": "cnn", "stem": "strided", "width": 48},
    "mlp": {"model": "mlp"},
}


def candidate_config(name: str, **overrides: object) -> TrainConfig:
    settings = {**CANDIDATES[name], **overrides}
    return train_config(settings.pop("model"), **settings)
