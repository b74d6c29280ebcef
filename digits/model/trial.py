"""One trial of a study, as a Dask worker runs it: TensorFlow sized to the worker's share of
the cores, one configuration trained on the split files `digits.model.tuning` wrote, each
epoch's validation accuracy reported to the study's pruner.

Keras only inside the functions: importing this (the trial task is pickled by reference
to Dask) loads no TensorFlow before `size_threads` can size it.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from digits.environment import env_number
from digits.model.space import trial_config
from digits.model.tuning import read_splits


def size_threads() -> None:
    """Size TensorFlow's pools to this worker's share of the cores (TF_NUM_INTRAOP_THREADS);
    OMP/MKL variables do not reach them. Only possible before TensorFlow's first op."""
    if "TF_NUM_INTRAOP_THREADS" not in os.environ:
        return
    # 0 is TensorFlow's own "choose for me".
    intra = env_number("TF_NUM_INTRAOP_THREADS", 0, minimum=0)
    inter = env_number("TF_NUM_INTEROP_THREADS", 1, minimum=0)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # already initialised in this worker: the environment variables applied


@contextmanager
def collected_in_this_thread() -> Iterator[None]:
    """Python's garbage collector runs in this thread only, before and after the block:
    collecting an earlier trial's graph in the Dask worker's event-loop thread, with the
    GIL held, while this thread traced the next one, deadlocked on TensorFlow's graph lock
    (benchmarks/results.md, sixth session). One task thread per worker (flows/tune.py)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.collect()


def train_trial(
    number: int,
    params: dict[str, Any],
    model: str,
    epochs: int,
    data: Path,
    out_dir: Path,
    report: Callable[[int, float], bool] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one configuration on the train split, score it on the validation split.

    Returns small, JSON-friendly facts (never arrays or a model): the best validation
    accuracy, the per-epoch values, whether it was pruned and where its model was saved.
    """
    import keras

    from digits.model.train import fit_model

    size_threads()
    config = trial_config(model, params, epochs)
    callbacks = [pruning_callback(report)] if report else []
    keras.backend.clear_session()  # a long-lived worker would otherwise keep every graph
    try:
        with collected_in_this_thread():
            trained = fit_model(read_splits(data), config, log=log, callbacks=callbacks)
            path = out_dir / f"trial-{number}" / "model.keras"
            path.parent.mkdir(parents=True, exist_ok=True)
            trained.model.save(path)
    finally:
        keras.backend.clear_session()
    values = trained.history["val_accuracy"]
    return {
        "number": number,
        "params": params,
        "val_accuracy": max(values),
        "val_accuracies": values,
        "pruned": bool(callbacks and callbacks[0].pruned),
        "history": trained.history,
        "best_epoch": trained.best_epoch,
        "seconds": round(trained.seconds, 1),
        "calibration": trained.calibration,
        "not_a_digit": trained.not_a_digit,
        "model_path": str(path),
    }


def pruning_callback(report: Callable[[int, float], bool]):
    """A Keras callback (Keras imported here only) that reports each epoch's validation
    accuracy and stops training when the pruner says so; `.pruned` tells afterwards."""
    import keras

    class Pruning(keras.callbacks.Callback):
        pruned = False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is None or not math.isfinite(value):
                return
            prune = report(epoch, float(value))  # reported at every epoch, the last one too
            if prune and epoch + 1 < self.params["epochs"]:
                self.pruned = True
                self.model.stop_training = True

    return Pruning()
