"""Train: fit a model with a typed config, logging every epoch's metrics."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import keras

from digits.config import TrainConfig
from digits.data.splits import PIXEL_SCALE, Splits
from digits.data.typeset import with_typeset
from digits.model.architectures import (
    average_models,
    average_shifts,
    build_model,
    export_model,
)
from digits.model.calibration import calibrate
from digits.model.calibration import scale as scale_temperature
from digits.model.export import inference_model
from digits.model.exposure import DigitAccuracy, exposure_loss, with_negatives
from digits.model.not_a_digit import fit_rule

ONECYCLE_WARMUP = 0.3  # share of a onecycle run spent warming up
# Per step: the average spans the last ~1,000 steps (2-3 epochs at batch 128).
EMA_MOMENTUM = 0.999
BN_REFIT_IMAGES = 12_800  # training images whose statistics BatchNorm takes after averaging


@dataclass(frozen=True)
class TrainedModel:
    model: keras.Model  # exported: raw 0..255 pixels in, probabilities out
    history: dict[str, list[float]]
    best_epoch: int  # 1-based epoch whose weights were kept
    seconds: float
    calibration: dict | None = None  # the temperature's fit (digits.model.calibration)
    not_a_digit: dict | None = None  # the rule's fit (digits.model.not_a_digit.fit_rule)

    @property
    def epochs_run(self) -> int:
        return len(self.history["loss"])


def duration(seconds: float) -> str:
    """12s, 6m40s, 1h05m: short enough for an epoch line."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class EpochLog(keras.callbacks.Callback):
    """Sends one line per epoch to `log` (the Prefect run logger in a flow), with the time
    the planned epochs have left at the mean epoch's pace (early stopping may end sooner).
    `later_epochs`: epochs of the members that train after this one, counted in the time left."""

    def __init__(self, log: Callable[[str], None], epochs: int, later_epochs: int = 0):
        super().__init__()
        self.log, self.epochs, self.later = log, epochs, later_epochs
        self.started, self.spent = 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = " ".join(f"{name}={value:.4f}" for name, value in (logs or {}).items())
        elapsed = time.perf_counter() - self.started
        self.spent += elapsed
        left = self.spent / (epoch + 1) * (self.epochs - epoch - 1 + self.later)
        self.log(f"epoch {epoch + 1}/{self.epochs} {metrics} ({elapsed:.1f}s, ~{duration(left)} left)")


class RunProgress(keras.callbacks.Callback):
    """A terminal progress bar over every planned step of the run, with its ETA (Keras's
    own bar counts one epoch at a time)."""

    def __init__(self, epochs: int, steps_per_epoch: int):
        super().__init__()
        self.steps, self.epoch = steps_per_epoch, 0
        self.bar = keras.utils.Progbar(epochs * steps_per_epoch, stateful_metrics=["loss"])

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        values = [("loss", float(loss))] if loss is not None else None
        self.bar.update(self.epoch * self.steps + batch + 1, values=values)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar._dynamic_display:  # end the bar's line, so the epoch's log line has its own
            sys.stdout.write("\n")
            sys.stdout.flush()


def seed_everything(seed: int) -> None:
    """Make CPU runs repeatable: Python, NumPy and backend generators, deterministic ops."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # only TensorFlow needs an explicit switch for determinism

        tf.config.experimental.enable_op_determinism()


def learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    if config.lr_schedule == "constant":
        return config.learning_rate
    steps = config.epochs * steps_per_epoch
    if config.lr_schedule == "onecycle":
        # One cycle: a linear warm-up from a tenth of the rate over the first 30% of the run
        # lets a short run use a large peak rate; then cosine decay to zero.
        warmup = round(ONECYCLE_WARMUP * steps)
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10,
            decay_steps=steps - warmup,
            warmup_target=config.learning_rate,
            warmup_steps=warmup,
        )
    # Cosine decay to zero over the planned run: large steps early, fine-tuning at the end.
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)


def optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    # Keras keeps the average beside the live weights and `fit` swaps it in once, at the end
    # (no ema_overwrite_frequency: overwriting every epoch would restart training from the
    # average each time). fit_model then re-estimates BatchNorm's statistics for it.
    ema = {"use_ema": True, "ema_momentum": EMA_MOMENTUM} if config.ema else {}
    return keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch), **ema)


def refit_batchnorm(model: keras.Model, images, batch_size: int) -> None:
    """Recompute every BatchNormalization's moving statistics for the current weights.

    The averaged weights never ran forward in training, so the statistics the live weights
    left behind do not fit them. They become the plain mean of the batch statistics over
    the first BN_REFIT_IMAGES training images (momentum 1 - 1/k at the k-th batch).
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for k, start in enumerate(range(0, min(len(images), BN_REFIT_IMAGES), batch_size), start=1):
        for norm in norms:
            norm.momentum = 1.0 - 1.0 / k
        model(images[start : start + batch_size], training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def loss(config: TrainConfig) -> str | Callable:
    if not config.label_smoothing and not config.outlier_exposure:
        return "sparse_categorical_crossentropy"
    # Keras' sparse loss has neither label smoothing nor negatives (fit_one drops the compile
    # settings afterwards, so saved models never reference this function).
    return exposure_loss(config.label_smoothing, config.exposure_weight)


def fit_model(
    splits: Splits,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    progress: bool = False,
    callbacks: list[keras.callbacks.Callback] = (),
) -> TrainedModel:
    """`callbacks` run after the epoch log and early stopping (a tuning trial's pruning).

    With `members` > 1 the members train one after another (seeds seed, seed+1, ...) and
    the model returned averages their probabilities; the history is theirs end to end, and
    best_epoch the first member's. With `test_shifts` the model returned also averages over
    moved copies of each image. Last, a temperature fitted on the validation split calibrates
    what the whole model answers.
    """
    trained = (
        fit_one(splits, config, log, progress, callbacks)
        if config.members == 1
        else fit_members(splits, config, log, progress, callbacks)
    )
    if config.test_shifts != "none":
        # Augmentation out first: its random ops would export, and shifted copies only predict.
        trained = replace(
            trained, model=average_shifts(inference_model(trained.model), config.test_shifts)
        )
    validation = trained.model.predict(splits.x_val / PIXEL_SCALE, batch_size=1024, verbose=0)
    model, record = calibrate(trained.model, validation, splits.y_val)
    log(f"calibration: temperature {record['temperature']:.4f}, validation NLL "
        f"{record['validation_nll']:.4f} -> {record['validation_nll_calibrated']:.4f}")
    rule = fit_rule(scale_temperature(validation, record["temperature"]),
                    "outlier exposure" if config.outlier_exposure else "digits only")
    log(f"not a digit: spread under {rule['threshold']:.4f} "
        f"({rule['flagged_validation']:.2%} of the validation digits)")
    return replace(trained, model=model, calibration=record, not_a_digit=rule)


def fit_members(
    splits: Splits,
    config: TrainConfig,
    log: Callable[[str], None],
    progress: bool,
    callbacks: list[keras.callbacks.Callback],
) -> TrainedModel:
    trained = [
        fit_one(
            splits,
            replace(config, seed=config.seed + i, members=1),
            lambda line, i=i: log(f"member {i + 1}/{config.members} {line}"),
            progress,
            callbacks,
            later_epochs=config.epochs * (config.members - i - 1),
        )
        for i in range(config.members)
    ]
    # Augmentation layers out first: the ensemble only ever predicts.
    members = [inference_model(member.model) for member in trained]
    return TrainedModel(
        model=average_models(members, name=config.model),
        history={key: [v for member in trained for v in member.history[key]]
                 for key in trained[0].history},
        best_epoch=trained[0].best_epoch,
        seconds=sum(member.seconds for member in trained),
    )


def build_for(config: TrainConfig) -> keras.Model:
    """The untrained model `config` describes (one member of it)."""
    return build_model(
        config.model,
        augment=config.augment,
        seed=config.seed,
        width=config.width,
        depth=config.depth,
        dropout=config.dropout,
        augment_strength=config.augment_strength,
        stroke_width=config.stroke_width,
        # the mlp has no stem, and check_shape refuses one
        **({"stem": config.stem} if config.model == "cnn" else {}),
    )


def fit_one(
    splits: Splits,
    config: TrainConfig,
    log: Callable[[str], None],
    progress: bool,
    callbacks: list[keras.callbacks.Callback],
    later_epochs: int = 0,
) -> TrainedModel:
    seed_everything(config.seed)
    model = build_for(config)
    x_train, y_train = with_negatives(splits, config)
    x_train, y_train = with_typeset(x_train, y_train, config, len(splits.y_train))
    steps = -(-len(y_train) // config.batch_size)
    model.compile(
        optimizer=optimizer(config, steps),
        loss=loss(config),
        metrics=[DigitAccuracy(name="accuracy")],  # a negative has no right answer
    )
    # With an average the weights to keep are the average's, swapped in after the last epoch.
    # Patience 0 runs every epoch and keeps the last: a cosine run ends with its smallest
    # steps, and the best of 5,000 validation images (a tie is no gain) is often earlier.
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=config.patience, restore_best_weights=not config.ema
    ) if config.patience else None
    started = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(splits.x_val, splits.y_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=[
            *([RunProgress(config.epochs, steps)] if progress else []),
            EpochLog(log, config.epochs, later_epochs),
            *([stop] if stop else []),
            *callbacks,
        ],
        verbose=0,
    )
    if config.ema:
        refit_batchnorm(model, splits.x_train, config.batch_size)
    # The saved core would name our loss and metric, which no reader of the registry can
    # resolve; the exported model only predicts, so it does not need compile settings.
    del model._compile_config
    return TrainedModel(
        model=export_model(model),
        history={name: [float(v) for v in values] for name, values in history.history.items()},
        # With restore_best_weights Keras 3 puts the best epoch's weights back at the end of
        # training whether or not it stopped early, so those are the weights we return; an
        # average ends with the last epoch.
        best_epoch=stop.best_epoch + 1 if stop and not config.ema else len(history.epoch),
        seconds=time.perf_counter() - started,
    )
