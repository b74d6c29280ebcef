"""The search space: what a tuning study may try, declared once, typed, over `TrainConfig`
fields. A trial's parameters are `train_overrides`, so the best one becomes a run's config
(and manifest) unchanged.

Plain Python, so `digits tune` checks the space before its flow starts; Optuna's
distributions load only inside `to_optuna`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from digits.config import LR_SCHEDULES, PRESETS, STEMS, TrainConfig, train_config
from digits.errors import UsageError

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    options: tuple


Distribution = IntRange | FloatRange | Choice

# TrainConfig field -> distribution, for every model.
COMMON_SPACE: dict[str, Distribution] = {
    "learning_rate": FloatRange(3e-4, 1e-2, log=True),
    "lr_schedule": Choice(LR_SCHEDULES),
    "batch_size": Choice((32, 64, 128, 256)),
    "augment_strength": FloatRange(0.0, 2.0),  # 0: no augmentation layers at all
    "dropout": FloatRange(0.0, 0.5),
    "label_smoothing": FloatRange(0.0, 0.2),
    "ema": Choice((False, True)),
}
# Width and depth mean units/layers for the mlp and filters/stages for the cnn.
SHAPE_SPACE: dict[str, dict[str, Distribution]] = {
    "mlp": {"width": IntRange(64, 512, log=True), "depth": IntRange(1, 3)},
    "cnn": {
        "width": IntRange(16, 64, log=True),
        "depth": IntRange(1, 3),
        "stem": Choice(STEMS),
    },
}


def search_space(model: str) -> dict[str, Distribution]:
    """The space around the preset `model`: its architecture's shapes and the common knobs."""
    if model not in PRESETS:
        raise UsageError(f"--model {model!r} is not one of {', '.join(PRESETS)}")
    return {**SHAPE_SPACE[PRESETS[model].model], **COMMON_SPACE}


def corners(space: dict[str, Distribution]) -> list[dict[str, Any]]:
    """The lowest and the highest value of every parameter: a config each, for bound checks."""
    def pick(dist: Distribution, end: int) -> Any:
        return dist.options[end] if isinstance(dist, Choice) else (dist.low, dist.high)[end]

    return [{name: pick(dist, end) for name, dist in space.items()} for end in (0, -1)]


def trial_config(model: str, params: dict[str, Any], epochs: int) -> TrainConfig:
    """The TrainConfig a trial trains: the preset's settings, then `params` and `epochs`."""
    params = dict(params)
    if "augment_strength" in params:  # strength 0 means off; any other turns it on (mlp too)
        params["augment"] = params["augment_strength"] > 0
    return train_config(model, **params, epochs=epochs)


def default_params(model: str) -> dict[str, Any]:
    """The preset as a point of the space: a new study's first trial, so a study never ends
    below the configuration it would replace."""
    defaults = PRESETS[model]
    params = {name: getattr(defaults, name) for name in search_space(model)}
    if not defaults.augment:
        params["augment_strength"] = 0.0
    return params


def to_optuna(space: dict[str, Distribution]) -> dict[str, optuna.distributions.BaseDistribution]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    def convert(dist: Distribution):
        if isinstance(dist, IntRange):
            return IntDistribution(dist.low, dist.high, log=dist.log)
        if isinstance(dist, FloatRange):
            return FloatDistribution(dist.low, dist.high, log=dist.log)
        return CategoricalDistribution(dist.options)

    return {name: convert(dist) for name, dist in space.items()}


def check_space(model: str) -> None:
    """Every parameter is a TrainConfig field and both corners of the space are valid."""
    space = search_space(model)
    if PRESETS[model].members > 1:
        # A trial reports each epoch of one model to Optuna and scores that model; members
        # trained in turn would report every step once per member.
        raise UsageError(f"--model {model} averages {PRESETS[model].members} models, and a tuning"
                         f" trial trains one; tune around cnn, then train {model} with its settings")
    unknown = set(space) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise UsageError(f"search space names unknown TrainConfig fields {sorted(unknown)}")
    for params in corners(space):
        trial_config(model, params, epochs=1)

