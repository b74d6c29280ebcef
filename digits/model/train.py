"""Train: fit a model with a typed config, logging every epoch's metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import keras

from digits.config import TrainConfig
from digits.data.splits import Splits
from digits.model.architectures import build_model, export_model


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


def optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    # With EMA the averaged weights replace the live ones at every epoch's end, so validation,
    # early stopping and the kept weights all see the average (not only after the last epoch).
    ema = {"use_ema": True, "ema_overwrite_frequency": steps_per_epoch} if config.ema else {}
    return keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch), **ema)


def loss(config: TrainConfig) -> str | Callable:
    if not config.label_smoothing:
        return "sparse_categorical_crossentropy"
    # Keras' sparse loss has no label smoothing: smooth one-hot labels instead (fit_model
    # drops the compile settings afterwards, so saved models never reference this function).
    smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)

    def smoothed_sparse_crossentropy(y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return smoothed(keras.ops.one_hot(labels, y_pred.shape[-1]), y_pred)

    return smoothed_sparse_crossentropy


def fit_model(
    splits: Splits,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    progress: bool = False,
    callbacks: list[keras.callbacks.Callback] = (),
) -> TrainedModel:
    """`callbacks` run after the epoch log and early stopping (a tuning trial's pruning)."""
    seed_everything(config.seed)
    model = build_model(
        config.model,
        augment=config.augment,
        seed=config.seed,
        width=config.width,
        depth=config.depth,
        dropout=config.dropout,
        augment_strength=config.augment_strength,
    )
    steps = -(-len(splits.y_train) // config.batch_size)
    model.compile(
        optimizer=optimizer(config, steps),
        loss=loss(config),
        metrics=["accuracy"],  # resolved from the label shapes: sparse accuracy either way
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
        callbacks=[EpochLog(log, config.epochs), stop, *callbacks],
        verbose=1 if progress else 0,
    )
    if config.label_smoothing:
        # The saved core would name the smoothed loss, which no reader of the registry can
        # resolve; the exported model only predicts, so it does not need compile settings.
        del model._compile_config
    return TrainedModel(
        model=export_model(model),
        history={name: [float(v) for v in values] for name, values in history.history.items()},
        # With restore_best_weights Keras 3 puts the best epoch's weights back at the end of
        # training whether or not it stopped early, so those are the weights we return.
        best_epoch=stop.best_epoch + 1,
        seconds=time.perf_counter() - started,
    )
