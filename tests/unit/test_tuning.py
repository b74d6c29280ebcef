"""digits.model.tuning and trial: the search space's bounds, the study on disk, one trial on
tiny data."""

import json
import threading
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from digits.config import TrainConfig
from digits.data.splits import Splits
from digits.errors import UsageError
from digits.model.space import (
    Choice,
    corners,
    default_params,
    search_space,
    to_optuna,
    trial_config,
)
from digits.model.study_report import trial_rows
from digits.model.trial import size_threads, train_trial
from digits.model.tuning import (
    check_study_name,
    fail_interrupted,
    finished,
    open_study,
    read_splits,
    start_from_defaults,
    write_splits,
)

MODELS = ("mlp", "cnn")


@pytest.mark.parametrize("model", MODELS)
def test_every_parameter_is_a_train_config_field(model):
    assert set(search_space(model)) <= {f.name for f in fields(TrainConfig)} - {"model", "epochs"}


@pytest.mark.parametrize("model", MODELS)
def test_both_corners_of_the_space_are_valid_configs(model):
    for params in corners(search_space(model)):
        config = trial_config(model, params, epochs=1)
        assert {name: getattr(config, name) for name in params} == params


@pytest.mark.parametrize("model", MODELS)
def test_the_defaults_lie_inside_the_space(model):
    space = to_optuna(search_space(model))
    for name, value in default_params(model).items():
        assert space[name]._contains(space[name].to_internal_repr(value)), name


def test_space_distributions_are_typed():
    space = to_optuna(search_space("cnn"))
    assert isinstance(space["width"], IntDistribution) and space["width"].log
    assert isinstance(space["learning_rate"], FloatDistribution) and space["learning_rate"].log
    assert isinstance(space["ema"], CategoricalDistribution)
    assert space["ema"].choices == (False, True)
    assert all(isinstance(d, Choice) or d.low < d.high for d in search_space("cnn").values())


def test_out_of_bounds_values_are_refused():
    with pytest.raises(UsageError, match="depth"):
        trial_config("cnn", {"depth": 4}, epochs=1)
    with pytest.raises(UsageError, match="label-smoothing"):
        trial_config("cnn", {"label_smoothing": 0.6}, epochs=1)
    with pytest.raises(UsageError, match="dropout"):
        trial_config("mlp", {"dropout": -0.1}, epochs=1)


def test_augment_strength_zero_turns_augmentation_off():
    assert not trial_config("cnn", {"augment_strength": 0.0}, 1).augment
    assert trial_config("mlp", {"augment_strength": 0.5}, 1).augment


def tiny_splits(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10), n).astype(np.int64)
    images = rng.random((n, 28, 28), dtype=np.float32) * 0.2
    images[np.arange(n), labels * 2 + 4, 4:24] = 1.0  # one bright row per class: learnable
    return Splits(images, labels, images[:50], labels[:50], images[:20] * 0 + 7, labels[:20])


def test_split_files_hold_train_and_validation_only(tmp_path):
    folder = write_splits(tiny_splits(), tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["done", "x_train.npy", "y_train.npy", "x_val.npy", "y_val.npy"]
    )
    assert write_splits(tiny_splits(), tmp_path) == folder  # same content, same folder
    splits = read_splits(folder)
    assert isinstance(splits.x_train, np.memmap)
    assert len(splits.x_test) == 0 and len(splits.y_test) == 0


def test_a_writer_that_missed_the_ready_folder_never_rewrites_its_files(tmp_path, monkeypatch):
    """Two tune runs on the same data both find no split folder. The one that writes second
    must leave the first one's files alone: its workers memory-map them, and np.save
    truncating a mapped file means SIGBUS or torn reads there."""
    save, late_paths = np.save, []
    late_waiting, first_done = threading.Event(), threading.Event()

    def paused_save(file, array, *args, **kwargs):
        if threading.current_thread() is late:  # the late writer, already past the check
            late_paths.append(Path(file))
            late_waiting.set()
            first_done.wait(30)
        save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", paused_save)
    results = []
    late = threading.Thread(target=lambda: results.append(write_splits(tiny_splits(), tmp_path)))
    late.start()
    assert late_waiting.wait(30)
    folder = write_splits(tiny_splits(), tmp_path)
    mapped = read_splits(folder).x_train
    before = {p.name: (p.stat().st_ino, p.stat().st_size) for p in folder.iterdir()}
    first_done.set()
    late.join(30)

    assert results == [folder]
    assert late_paths and not any(path.parent == folder for path in late_paths)
    assert {p.name: (p.stat().st_ino, p.stat().st_size) for p in folder.iterdir()} == before
    np.testing.assert_array_equal(mapped, tiny_splits().x_train)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # the late copy is gone


def test_a_half_written_folder_without_its_marker_is_replaced(tmp_path):
    folder = write_splits(tiny_splits(), tmp_path)
    (folder / "done").unlink()  # as a writer from before staging left it when killed
    (folder / "x_train.npy").write_bytes(b"\x93NUMPY truncated")
    assert write_splits(tiny_splits(), tmp_path) == folder
    np.testing.assert_array_equal(read_splits(folder).x_train, tiny_splits().x_train)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


@pytest.mark.parametrize(("name", "value"), [
    ("TF_NUM_INTRAOP_THREADS", "two"), ("TF_NUM_INTRAOP_THREADS", "-1"),
    ("TF_NUM_INTEROP_THREADS", "1.5"), ("TF_NUM_INTEROP_THREADS", ""),
])
def test_a_bad_thread_count_is_a_usage_error_naming_it(monkeypatch, name, value):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as refused:
        size_threads()
    assert str(refused.value).startswith(f"{name}={value!r} must be an integer")


@pytest.mark.slow  # trains
def test_a_trial_returns_small_results_and_a_saved_model(tmp_path):
    folder = write_splits(tiny_splits(), tmp_path / "data")
    reports = []
    result = train_trial(
        number=0,
        params={"width": 16, "depth": 1, "augment_strength": 0.0, "label_smoothing": 0.1},
        model="mlp",
        epochs=2,
        data=folder,
        out_dir=tmp_path / "trials",
        report=lambda epoch, value: reports.append((epoch, value)) or False,
        log=lambda line: None,
    )
    json.dumps(result)  # plain numbers, strings and lists: nothing heavy goes back to the flow
    assert [epoch for epoch, _ in reports] == [0, 1]
    assert result["val_accuracies"] == [value for _, value in reports]
    assert result["val_accuracy"] == max(result["val_accuracies"])
    assert not result["pruned"]
    import keras

    model = keras.saving.load_model(result["model_path"], safe_mode=True)  # no custom loss needed
    assert model.predict(np.zeros((1, 28, 28), np.uint8), verbose=0).shape == (1, 10)


@pytest.mark.slow  # trains
def test_a_pruned_trial_stops_after_the_epoch_it_was_pruned(tmp_path):
    folder = write_splits(tiny_splits(), tmp_path / "data")
    result = train_trial(
        1, {"width": 8, "depth": 1}, "mlp", 3, folder, tmp_path / "trials",
        report=lambda epoch, value: True, log=lambda line: None,
    )
    assert result["pruned"] and len(result["val_accuracies"]) == 1


@pytest.mark.slow  # trains
def test_the_last_epoch_never_prunes(tmp_path):
    folder = write_splits(tiny_splits(), tmp_path / "data")
    reports = []
    result = train_trial(
        2, {"width": 8, "depth": 1}, "mlp", 1, folder, tmp_path / "trials",
        report=lambda epoch, value: reports.append(epoch) or True, log=lambda line: None,
    )
    assert reports == [0] and not result["pruned"]  # reported, but kept as a finished trial


BAD_STUDY_NAMES = ["../../x", "..", "a..b", "a/b", "/tmp/x", ".hidden", "-x", "", "tune mlp",
                   "x" * 101, "tune\nx"]


@pytest.mark.parametrize("name", BAD_STUDY_NAMES)
def test_a_study_name_that_is_no_plain_file_name_is_refused(cli, monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGITS_ARTIFACTS", raising=False)
    runs = []
    fake_run = lambda *args, **kwargs: runs.append(kwargs) or (SimpleNamespace(message="ok"), None)
    monkeypatch.setattr("flows.launch.run_flow", fake_run)
    code, _, err = cli("tune", "--model", "mlp", "--study", name, "--no-promote")
    assert code == 2 and not runs  # refused before any run
    assert err.strip().splitlines()[-1].startswith(f"error: --study {name!r} ")


def test_plain_study_names_are_accepted():
    for name in ("tune-cnn", "exp1.v2", "A_b", "x" * 100, None):
        assert check_study_name(name) == name


def test_an_interrupted_study_resumes_with_its_running_trials_failed(tmp_path):
    path = tmp_path / "studies" / "s.journal"
    study = open_study("s", path)
    start_from_defaults(study, "mlp")
    space = to_optuna(search_space("mlp"))
    first = study.ask(space)
    assert first.params == default_params("mlp")  # the defaults go first
    study.tell(first, 0.9)
    study.ask(space)  # left running: the process "dies" here

    resumed = open_study("s", path)
    start_from_defaults(resumed, "mlp")  # not queued again
    assert fail_interrupted(resumed) == [1]
    assert [t.state for t in resumed.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert finished(resumed) == 2
    nxt = resumed.ask(space)
    assert nxt.number == 2 and nxt.params != default_params("mlp")
    resumed.tell(nxt, 0.95)
    assert resumed.best_trial.number == 2
    assert [row["state"] for row in trial_rows(resumed)] == ["COMPLETE", "FAIL", "COMPLETE"]


def test_the_model_card_shows_the_study():
    from digits.registry.card import render_card

    manifest = {
        "version": "v1", "created_at": "2026-11-25T00:00:00Z", "model": "mlp",
        "metrics": {"accuracy": 0.98},
        "study": {"name": "tune-mlp", "best_trial": 3, "best_val_accuracy": 0.9734,
                  "best_params": {"width": 219}, "trials": [{"number": 0, "state": "COMPLETE"}]},
    }
    card = render_card(manifest)
    assert "Tuning study" in card and "tune-mlp" in card and "219" in card
    assert "Tuning study" not in render_card({**manifest, "study": None})


def test_tuning_around_an_ensemble_preset_is_refused_before_anything_starts():
    from digits.model.space import check_space

    with pytest.raises(UsageError, match="--model best averages 2 models, and a tuning trial"):
        check_space("best")
    check_space("cnn")  # its one model is what a trial trains
