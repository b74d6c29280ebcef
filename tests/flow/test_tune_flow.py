"""The tune flow on a real Dask LocalCluster of worker processes, against the test API."""

import os
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from digits.config import train_config
from digits.data.batches import accepted_batches
from digits.data.ingest import load_mnist
from digits.data.snapshot import combine
from digits.data.splits import preprocess_data
from digits.model.reproduce import reproduce
from digits.model.tuning import write_splits
from digits.registry.store import Registry
from flows.retrain import retrain
from flows.tune import tune
from tests.helpers.batchstore import new_digits, write_batch
from tests.helpers.flows import read_flow_run, read_task_runs
from tests.helpers.synth import write_dataset


def trial_task_runs(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(run.name for run in runs if run.name.startswith("trial-"))


def artifact_keys(flow_run_id) -> set[str]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key for a in artifacts}


def test_tune_goes_through_retrains_stages_with_a_batch_in_the_store(tmp_path):
    """Trials run on Dask and train on MNIST plus the batch, on retrain's split; the best is
    gated on the new data too; its manifest has the snapshot, so reproduce works and a
    default run skips; the run is tagged as a retrain run is. A study resuming, and a run that
    only reports (no promotion), are tests/integration/test_tune_dask_postgres.py's, through
    `digits tune` on a real server; the loop's resume is tests/unit/test_study_loop.py's."""
    store = Path(os.environ["DIGITS_DATA"])
    data, registry = write_dataset(tmp_path / "data"), tmp_path / "registry"
    batch = write_batch(store, *new_digits(100, 20), name="writers-t")
    # One Dask worker process: two at once, reporting to a real server, are
    # tests/integration/test_tune_dask_postgres.py's.
    settings = {"model": "mlp", "epochs": 3, "workers": 1, "data_dir": data,
                "registry": registry, "min_train_rows": 1000, "study_name": "batchtest"}

    state = tune(**settings, trials=2, return_state=True)

    outcome = state.result()
    assert outcome.promoted, state.message  # trial 0 is the mlp's defaults, which pass here
    flow_run_id = state.state_details.flow_run_id
    names = trial_task_runs(flow_run_id)
    assert [name.split()[0] for name in names] == ["trial-0", "trial-1"]
    assert "width=128" in names[0]  # named by number and params
    assert {"tuning-trials", "tuning-study"} <= artifact_keys(flow_run_id)
    assert "promoted" in read_flow_run(state).tags  # as a retrain run is tagged
    assert {"snapshot", "union", "validate-raw", "validate-processed", "evaluate",
            "evaluate-new-data", "export", "gate-and-promote"} <= {
        run.name for run in read_task_runs(state)}

    manifest = Registry(registry).manifest(outcome.version)
    study = manifest["study"]
    assert study["name"] == "batchtest" and len(study["trials"]) == 2
    assert manifest["hyperparameters"] == manifest["hyperparameters"] | study["best_params"]
    assert [b["id"] for b in manifest["data"]["snapshot"]["batches"]] == [batch.name]
    assert manifest["metrics"]["new_data"]["rows"] == manifest["data"]["rows"]["new_held_out"] > 0
    assert manifest["gate"]["new_data_accuracy"] == manifest["metrics"]["new_data"]["accuracy"]
    # the best trial's temperature, fitted when it trained, travels with its model
    assert manifest["calibration"]["temperature"] > 0 and "ece_uncalibrated" in manifest["metrics"]

    # The trials' split files (named by their content) are the split a `digits run` makes
    # of MNIST plus the batch, not of MNIST alone.
    mnist = load_mnist(data, store)
    config = train_config("mlp", epochs=3)

    def split_folder(train_set):
        splits = preprocess_data(train_set, config.validation_size, config.seed)
        return write_splits(splits, tmp_path / "expected").name

    studies_data = Path(os.environ["DIGITS_ARTIFACTS"]) / "studies" / "data"
    used = {folder.name for folder in studies_data.iterdir()}
    assert used == {split_folder(combine(mnist, accepted_batches(store))[0])}
    assert split_folder(mnist) not in used

    result = reproduce(Registry(registry), outcome.version, store, data)
    assert abs(result.accuracy - result.recorded) <= 0.01

    skipped = retrain(model="mlp", data_dir=data, registry=registry, min_train_rows=1000,
                      return_state=True)  # the model's defaults, nothing new: skipped
    assert skipped.result().skipped, skipped.message


def test_tune_and_retrain_carry_the_same_outcome_hooks():
    from flows.retrain import retrain

    assert tune.on_completion_hooks == retrain.on_completion_hooks
    assert tune.on_failure_hooks == retrain.on_failure_hooks
    assert tune.on_crashed_hooks == retrain.on_crashed_hooks
