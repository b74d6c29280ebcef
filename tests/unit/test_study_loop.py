"""digits.model.study: the ask-and-tell loop on a journal study, with a fake round runner
in place of the flow's Dask tasks (no Prefect, no Keras)."""

import json
import logging
from contextlib import nullcontext
from types import SimpleNamespace

from optuna.trial import TrialState

from digits.model import study as study_loop
from digits.model.space import default_params, search_space, to_optuna
from digits.model.study import Failure, record, run_study
from digits.model.tuning import (
    fail_interrupted,
    finished,
    live_reporter,
    open_study,
    start_from_defaults,
)

SPACE = to_optuna(search_space("mlp"))


def result(values, pruned=False):
    """What `train_trial` returns, with made-up numbers."""
    return {
        "val_accuracy": max(values), "val_accuracies": values, "pruned": pruned,
        "model_path": "m", "history": {"val_accuracy": values}, "best_epoch": len(values),
        "seconds": 1.0, "calibration": {"method": "temperature scaling", "temperature": 1.5},
        "not_a_digit": {"rule": "spread under the threshold", "threshold": 0.5},
    }


class FakeRounds:
    """Runs a round by calling `outcome` on each configuration; records what was asked."""

    def __init__(self, outcome=lambda asked: result([0.5, 0.5 + asked.number / 100])):
        self.outcome, self.rounds, self.opened = outcome, [], 0

    def open(self):
        self.opened += 1
        return nullcontext(self.run)

    def run(self, configs):
        self.rounds.append([asked.number for asked in configs])
        return [self.outcome(asked) for asked in configs]


def test_each_round_asks_per_round_configurations_until_the_study_holds_trials(tmp_path):
    study = open_study("s", tmp_path / "s.journal")
    rounds = FakeRounds()
    run_study(study, SPACE, trials=5, per_round=2, open_runner=rounds.open)
    assert rounds.rounds == [[0, 1], [2, 3], [4]]
    assert rounds.opened == 1  # one cluster for the whole study
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    assert [t.value for t in study.trials] == [0.5, 0.51, 0.52, 0.53, 0.54]
    assert study.best_trial.number == 4


def test_the_configurations_are_the_ones_the_study_asked_for(tmp_path):
    study = open_study("s", tmp_path / "s.journal")
    start_from_defaults(study, "mlp")
    asked = []
    rounds = FakeRounds(lambda config: asked.append(config) or result([0.5]))
    run_study(study, SPACE, trials=2, per_round=2, open_runner=rounds.open)
    assert asked[0].params == default_params("mlp")  # the queued defaults go first
    assert [config.params for config in asked] == [t.params for t in study.trials]


def test_a_failed_trial_is_told_as_failed_and_counts_towards_trials(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="digits.model.study")
    study = open_study("s", tmp_path / "s.journal")
    rounds = FakeRounds(
        lambda asked: Failure("worker died") if asked.number == 1 else result([0.4, 0.5])
    )
    run_study(study, SPACE, trials=3, per_round=2, open_runner=rounds.open)
    assert rounds.rounds == [[0, 1], [2]]  # a failed trial is finished: not run again
    assert [t.state for t in study.trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[1].user_attrs == {"error": "worker died"}
    assert "trial 1 failed: worker died" in caplog.messages


def test_a_long_failure_message_is_kept_short(tmp_path):
    study = open_study("s", tmp_path / "s.journal")
    trial = study.ask(SPACE)
    record(study, trial, Failure("x" * 600))
    assert study.trials[0].user_attrs["error"] == "x" * 500


def test_a_completed_trial_keeps_its_facts_and_a_pruned_one_is_told_pruned(tmp_path):
    study = open_study("s", tmp_path / "s.journal")
    done, pruned = study.ask(SPACE), study.ask(SPACE)
    record(study, done, result([0.4, 0.5]))
    record(study, pruned, result([0.1], pruned=True))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert study.trials[0].value == 0.5
    assert study.trials[0].intermediate_values == {0: 0.4, 1: 0.5}  # replayed by the loop
    assert study.trials[1].intermediate_values == {0: 0.1}
    attributes = study.trials[0].user_attrs
    assert attributes["model_path"] == "m" and attributes["val_accuracies"] == [0.4, 0.5]
    assert json.loads(json.dumps(attributes)) == attributes  # JSON-safe, as the journal needs


def test_a_trial_is_told_before_the_next_result_of_its_round_is_taken(tmp_path):
    """A lazy round: the others still running can count the first one in their pruning."""
    study = open_study("s", tmp_path / "s.journal")
    seen = []

    def lazy(configs):
        for asked in configs:
            seen.append([t.state for t in study.trials])
            yield result([0.5])

    run_study(study, SPACE, 2, 2, lambda: nullcontext(lazy))
    assert seen == [
        [TrialState.RUNNING, TrialState.RUNNING],
        [TrialState.COMPLETE, TrialState.RUNNING],
    ]


def test_the_study_stops_when_time_is_up(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="digits.model.study")
    now = [0.0]
    monkeypatch.setattr(study_loop, "time", SimpleNamespace(monotonic=lambda: now[0]))
    study = open_study("s", tmp_path / "s.journal")

    def slow(asked):
        now[0] += 40  # seconds a trial takes
        return result([0.5])

    rounds = FakeRounds(slow)
    run_study(study, SPACE, trials=10, per_round=1, open_runner=rounds.open, timeout_minutes=1)
    assert rounds.rounds == [[0], [1]]  # after 80 s, the minute is up: no third round
    assert finished(study) == 2
    assert "timeout (1 min) reached; 8 trials not run" in caplog.messages


def test_no_timeout_runs_every_trial(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(study_loop, "time", SimpleNamespace(monotonic=lambda: now[0]))
    study = open_study("s", tmp_path / "s.journal")
    rounds = FakeRounds(lambda asked: now.__setitem__(0, now[0] + 3600) or result([0.5]))
    run_study(study, SPACE, 3, 1, rounds.open, timeout_minutes=None)
    assert rounds.rounds == [[0], [1], [2]]


def test_a_journal_study_resumes_with_only_the_missing_trials(tmp_path):
    path = tmp_path / "s.journal"
    first = open_study("s", path)
    start_from_defaults(first, "mlp")
    run_study(first, SPACE, 2, 2, FakeRounds().open)
    first.ask(SPACE)  # left running: the process "dies" here

    resumed = open_study("s", path)
    start_from_defaults(resumed, "mlp")  # not queued again
    assert fail_interrupted(resumed) == [2]
    rounds = FakeRounds()
    run_study(resumed, SPACE, trials=5, per_round=4, open_runner=rounds.open)
    assert rounds.rounds == [[3, 4]]  # 3 finished (one failed): 2 more make 5
    assert [t.state for t in open_study("s", path).trials] == [
        TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
        TrialState.COMPLETE, TrialState.COMPLETE]


def test_a_complete_study_opens_no_runner(tmp_path):
    path = tmp_path / "s.journal"
    run_study(open_study("s", path), SPACE, 2, 2, FakeRounds().open)
    rounds = FakeRounds()
    run_study(open_study("s", path), SPACE, 2, 2, rounds.open)
    assert rounds.opened == 0 and rounds.rounds == []  # no cluster started for nothing


def test_a_worker_reports_to_the_trial_of_its_number_and_the_loop_fills_in_the_rest(tmp_path):
    path = tmp_path / "s.journal"
    study = open_study("s", path)
    _, second = study.ask(SPACE), study.ask(SPACE)
    report = live_reporter(path, "s", 1)  # as a worker does, from the journal file
    assert report(0, 0.7) is False  # fewer than two finished trials: the pruner waits
    assert [t.intermediate_values for t in study.trials] == [{}, {0: 0.7}]
    record(study, second, result([0.6, 0.8]))
    assert study.trials[1].intermediate_values == {0: 0.7, 1: 0.8}  # epoch 0 as reported
    assert live_reporter(tmp_path / "other.journal", "s", 0) is None  # no shared file
