"""Issue 19's training levers: the strided stem, one-cycle, the average swapped in at the
end with BatchNorm re-fitted, and the run's progress with the time left."""

import re

import keras
import numpy as np
import pytest

from digits.config import train_config
from digits.data.splits import Splits
from digits.model.architectures import build_model
from digits.model.train import (
    EpochLog,
    duration,
    fit_model,
    learning_rate,
    refit_batchnorm,
)
from tests.helpers.synth import make_digits, make_prototypes


def small_splits(rows: int = 256) -> Splits:
    x, y = make_digits(rows, seed=1, prototypes=make_prototypes())
    x = x.astype(np.float32) / 255
    y = y.astype(np.int64)
    return Splits(x, y, x[:64], y[:64], x[:64], y[:64])


def test_strided_stem_starts_at_14x14():
    full = build_model("cnn", augment=False, seed=0)
    strided = build_model("cnn", augment=False, seed=0, stem="strided")
    convs = [layer for layer in strided.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].strides == (2, 2)
    assert convs[0].compute_output_shape((None, 28, 28, 1)) == (None, 14, 14, 32)
    # the same layers and weights: only where the resolution drops differs
    assert strided.count_params() == full.count_params()
    assert strided.predict(np.zeros((2, 28, 28), np.float32), verbose=0).shape == (2, 10)


def test_onecycle_warms_up_to_the_peak_then_decays_to_zero():
    config = train_config("cnn", lr_schedule="onecycle", learning_rate=4e-3, epochs=10)
    schedule = learning_rate(config, steps_per_epoch=100)
    rates = [float(schedule(step)) for step in (0, 150, 300, 650, 1000)]
    assert rates[0] == pytest.approx(4e-4)
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] == pytest.approx(4e-3)
    assert rates[2] > rates[3] > rates[4]
    assert rates[4] == pytest.approx(0.0, abs=1e-9)


def test_refit_batchnorm_takes_the_mean_of_the_batch_statistics():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9)])
    x = np.random.default_rng(0).normal(5.0, 2.0, (400, 3)).astype(np.float32)
    refit_batchnorm(model, x, batch_size=100)
    norm = model.layers[0]
    # equal batches, so the mean of the four batch means is the mean of the data
    np.testing.assert_allclose(norm.moving_mean.numpy(), x.mean(axis=0), rtol=1e-5)
    batch_variances = x.reshape(4, 100, 3).var(axis=1).mean(axis=0)
    np.testing.assert_allclose(norm.moving_variance.numpy(), batch_variances, rtol=1e-4)
    assert norm.momentum == 0.9  # put back for later training


def test_average_is_swapped_in_once_at_the_end():
    splits = small_splits()
    config = train_config("cnn", epochs=3, patience=3, ema=True, batch_size=64, width=8)
    average = {}

    class KeepAverage(keras.callbacks.Callback):
        # on_train_end runs after fit has swapped the average in
        def on_epoch_end(self, epoch, logs=None):
            self.live = [w.numpy().copy() for w in self.model.trainable_weights]

        def on_train_end(self, logs=None):
            average["end"] = [w.numpy() for w in self.model.trainable_weights]
            average["live"] = self.live

    trained = fit_model(splits, config, log=lambda _: None, callbacks=[KeepAverage()])
    assert trained.best_epoch == 3  # the average after the last epoch is what is kept
    changed = [not np.allclose(a, b) for a, b in zip(average["end"], average["live"])]
    assert any(changed), "the averaged weights differ from the last live ones"
    core = trained.model.layers[-1]
    kept = [w.numpy() for w in core.trainable_weights]
    for a, b in zip(kept, average["end"]):
        np.testing.assert_array_equal(a, b)


def test_duration_reads_short():
    assert [duration(s) for s in (4.4, 59.6, 400, 3899)] == ["4s", "1m00s", "6m40s", "1h04m"]


def test_epoch_log_says_the_time_left_at_the_mean_pace():
    lines = []
    log = EpochLog(lines.append, epochs=4)
    log.spent = 20.0  # two epochs took 20 s together
    log.started = __import__("time").perf_counter() - 10.0  # the third took 10 s
    log.on_epoch_end(2, {"loss": 0.5})
    assert re.fullmatch(r"epoch 3/4 loss=0\.5000 \(10\.\ds, ~10s left\)", lines[0]), lines


def test_the_time_left_counts_the_members_still_to_train():
    lines = []
    log = EpochLog(lines.append, epochs=4, later_epochs=8)  # two more members of 4 epochs
    log.spent = 20.0
    log.started = __import__("time").perf_counter() - 10.0
    log.on_epoch_end(2, {"loss": 0.5})
    assert lines[0].endswith(", ~1m30s left)"), lines  # 1 + 8 epochs at 10 s


def test_progress_bar_counts_every_planned_step(capsys):
    splits = small_splits(128)
    config = train_config("mlp", epochs=2, batch_size=32, patience=2)
    fit_model(splits, config, log=lambda _: None, progress=True)
    out = capsys.readouterr().out
    assert "8/8" in out  # 2 epochs of 4 steps, one bar for the run
