"""Train: fit a model with a typed config, logging every epoch's metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
from digits.config import TrainConfig
from digits.models import build_model, export_model
from digits.preprocess import Splits


@dataclass(frozen=True)
class TrainedModel:
    model: keras.Model  # exported: raw 0..255 pixels in, probabilities out
    history: dict[str, list[float]]
    best_epoch: int  # 1-based epoch whose weights were kept
    seconds: float

    @property
    def epochs_run(self) -> int:
        return len(self.history["loss"])


class EpochLog(keras.callbacks.Callback):
    """Sends one line per epoch to `log` (the Prefect run logger in a flow)."""

    def __init__(self, log: Callable[[str], None], epochs: int):
        super().__init__()
        self.log, self.epochs, self.started = log, epochs, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        metrics = " ".join(f"{name}={value:.4f}" for name, value in (logs or {}).items())
        elapsed = time.perf_counter() - self.started
        self.log(f"epoch {epoch + 1}/{self.epochs} {metrics} ({elapsed:.1f}s)")


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
    # Cosine decay to zero over the planned run: large steps early, fine-tuning at the end.
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * steps_per_epoch
    )


def fit_model(
    splits: Splits, config: TrainConfig, log: Callable[[str], None] = print, progress: bool = False
) -> TrainedModel:
    seed_everything(config.seed)
    model = build_model(config.model, augment=config.augment, seed=config.seed)
    steps = -(-len(splits.y_train) // config.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(config, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=config.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    history = model.fit(
        splits.x_train,
        splits.y_train,
        validation_data=(splits.x_val, splits.y_val),
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=[EpochLog(log, config.epochs), stop],
        verbose=1 if progress else 0,
    )
    return TrainedModel(
        model=export_model(model),
        history={name: [float(v) for v in values] for name, values in history.history.items()},
        # With restore_best_weights Keras 3 puts the best epoch's weights back at the end of
        # training whether or not it stopped early, so those are the weights we return.
        best_epoch=stop.best_epoch + 1,
        seconds=time.perf_counter() - started,
    )
