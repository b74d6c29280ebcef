"""Hyperparameter tuning: the study on disk and the data its trials read. What a trial may
try is `digits.model.space`; the loop that asks and tells is `digits.model.study`; one
trial's training is `digits.model.trial`.

Trials read the validation split carved from train out of `.npy` files on disk
(memory-mapped) and never see the test split: it is only for the final, gated number.

Imports Optuna and NumPy, never Keras: the flow that asks and tells does not load
TensorFlow for it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digits.config import IMAGE_SHAPE
from digits.errors import UsageError
from digits.files import sha256_bytes, staging_folder, sweep_staging
from digits.model.space import default_params

if TYPE_CHECKING:
    import optuna

    from digits.data.splits import Splits


# --- The study on disk -------------------------------------------------------------


def studies_dir(artifacts: Path) -> Path:
    return artifacts / "studies"


# A study is a file name under studies_dir (`<name>.journal`, `<name>/trial-N/`): never a
# path, so it cannot reach outside (the fullmatch keeps out `/`, a leading `.` and a newline).
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_study_name(name: str | None) -> str | None:
    """`name` if it may name a study (None: the default name); else a usage error."""
    if name is not None and (not STUDY_NAME.fullmatch(name) or ".." in name):
        raise UsageError(
            f"--study {name!r} must be 1 to 100 letters, digits, '_', '.' or '-', starting "
            "with a letter or digit, without '..'"
        )
    return name


def study_storage(path: Path) -> optuna.storages.BaseStorage:
    """Optuna's journal file: an append-only log with file locks, safe for several processes
    on one machine or a shared file system, and readable again after a crash."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    # The open(O_EXCL) lock works on NFS too, where symlink locks may not.
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def pruner() -> optuna.pruners.BasePruner:
    from optuna.pruners import MedianPruner

    # Prune a trial whose validation accuracy after an epoch is below the median of earlier
    # trials at that epoch, once two trials finished. Studies use few epochs, so the first
    # epoch counts too; the last one never prunes (pruning_callback): that saves nothing and
    # would drop a finished trial from the candidates for best.
    return MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def open_study(name: str, path: Path, seed: int = 0) -> optuna.Study:
    """Create the study, or load it when one of that name is stored (a resumed run)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=study_storage(path),
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner(),
        direction="maximize",
        load_if_exists=True,
    )


def start_from_defaults(study: optuna.Study, model: str) -> None:
    """Queue the model's defaults as the first trial of a study that has none."""
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial(default_params(model))


def fail_interrupted(study: optuna.Study) -> list[int]:
    """Trials left running by an interrupted tuning run are recorded as failed."""
    from optuna.trial import TrialState

    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        study.tell(number, state=TrialState.FAIL)
    return stale


def finished(study: optuna.Study) -> int:
    return sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))


def live_reporter(
    storage_path: Path, study_name: str, number: int
) -> Callable[[int, float], bool] | None:
    """Report (epoch, value) to the shared study from a worker; True: prune the trial.

    With ask-and-tell the flow's study loop (`digits.model.study`) holds the Trial, not the
    worker; a worker that can read the study's journal file (same machine or shared storage)
    reopens the trial by its number so the MedianPruner can stop it between epochs.
    Elsewhere there is no live pruning, and the loop replays the epochs' values when the
    trial returns (`digits.model.study.replay`).
    """
    if not storage_path.is_file():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_storage(storage_path)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner())
    # Optuna keeps a trial's storage id private; the storage maps the public number to it.
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number
    )
    trial = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()

    return report


# --- Data for the trials ------------------------------------------------------------

SPLIT_FILES = ("x_train", "y_train", "x_val", "y_val")  # never the test split
SPLITS_STAGING_PREFIX = ".staging-"  # split files being written; the owner holds `<name>.lock`


def write_splits(splits: Splits, root: Path) -> Path:
    """Write train and validation as .npy files once, in a folder named by their content."""
    parts: list[bytes | memoryview] = []
    for name in SPLIT_FILES:
        array = np.ascontiguousarray(getattr(splits, name))
        parts += [f"{name}{array.dtype}{array.shape}".encode(), array.data]
    folder = root / sha256_bytes(*parts)[:16]
    if not (folder / "done").is_file():
        publish_splits(splits, folder)
    return folder


def publish_splits(splits: Splits, folder: Path) -> None:
    """Write the files in a staging folder and rename it into place whole.

    Files in place are never written again: another run that found the folder first may
    have workers memory-mapping them, and np.save truncating a mapped file means SIGBUS or
    torn reads there. So when two runs both miss the folder, the first rename wins and the
    other run reads that one.
    """
    root = folder.parent
    if root.is_dir():  # a run killed mid-write
        sweep_staging(root, SPLITS_STAGING_PREFIX)
    with staging_folder(root, SPLITS_STAGING_PREFIX) as staging:
        for name in SPLIT_FILES:
            np.save(staging / f"{name}.npy", getattr(splits, name))
        (staging / "done").write_text("")
        try:
            os.rename(staging, folder)
        except OSError:
            if (folder / "done").is_file():
                return  # another run's came first: keep it; ours goes with the staging folder
            # Half-written by a run from before staging (no `done`): nobody reads it.
            shutil.rmtree(folder)
            os.rename(staging, folder)


def read_splits(folder: Path) -> Splits:
    """Memory-mapped train/validation; the test arrays are empty, so a trial cannot use them."""
    from digits.data.splits import Splits

    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in SPLIT_FILES}
    return Splits(
        **arrays,
        x_test=np.empty((0, *IMAGE_SHAPE), np.float32),
        y_test=np.empty((0,), np.int64),
    )
