"""The training configurations issue 19 compares: a name each, as TrainConfig settings.

Each candidate's settings apply to the cnn as it was before issue 19 (the TrainConfig field
defaults: the full stem, 12 epochs, no smoothing, no test shifts), so a name keeps meaning
the same run whatever the presets become. `reference` is that cnn; `default` is today's
`cnn` preset.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from digits.config import PRESETS, TrainConfig

CANDIDATES: dict[str, dict] = {
    "reference": {"model": "cnn"},
    "default": asdict(PRESETS["cnn"]),
    "reference-b256": {"model": "cnn", "batch_size": 256},
    "width16": {"model": "cnn", "width": 16},
    "strided": {"model": "cnn", "stem": "strided"},
    "strided-b256": {"model": "cnn", "stem": "strided", "batch_size": 256},
    # Full runs: a cheaper epoch and fewer of them (8 of 12 epochs at half the cost: 1/3).
    "strided-e8": {"model": "cnn", "stem": "strided", "epochs": 8},
    "width16-e8": {"model": "cnn", "width": 16, "epochs": 8},
    # Faster learning for a short run: no dropout, one cycle to a higher peak, the average.
    "strided-e9-fast": {"model": "cnn", "stem": "strided", "epochs": 9, "dropout": 0.0,
                        "lr_schedule": "onecycle", "learning_rate": 4e-3, "ema": True},
    # The strided epoch is a quarter of the reference's on a quiet machine: room for 14.
    "strided-e14": {"model": "cnn", "stem": "strided", "epochs": 14},
    # With oneDNN a strided step is about 0.25 of the reference's without (the pre-issue
    # default): 16 epochs fit in a third. Smoothed labels for the test-time shifts to average.
    "strided-e16-ls": {"model": "cnn", "stem": "strided", "epochs": 16, "label_smoothing": 0.1},
    # One epoch fewer, for room under the third (16 x 0.25-0.26 / 12 is 0.33-0.35).
    "strided-e15-ls": {"model": "cnn", "stem": "strided", "epochs": 15, "label_smoothing": 0.1},
    # The full stem, narrower: MACs fall with the width squared (24: 0.56, 20: 0.40).
    "width24": {"model": "cnn", "width": 24},
    "width20": {"model": "cnn", "width": 20},
}


def candidate_config(name: str, **overrides: object) -> TrainConfig:
    return replace(TrainConfig(), **{**CANDIDATES[name], **overrides})
