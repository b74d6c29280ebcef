"""Issue 12 in the flow: training on MNIST plus the accepted batches, both evaluations,
the new-data gate, the snapshot, skipped runs and `digits reproduce`."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from digits.config import IDX_FILES
from digits.data.batches import held_out_mask
from tests.helpers.batchstore import new_digits, split_styles, write_batch
from tests.helpers.flows import read_flow_run, read_task_runs, run_flow
from tests.helpers.synth import snapshot_tree, write_dataset, write_idx

CLI_FAST = ["--model", "mlp", "--epochs", "3", "--min-train-rows", "1000"]


def store() -> Path:
    return Path(os.environ["DIGITS_DATA"])  # set per test by tests/flow/conftest.py


def manifest_of(registry: Path, version: str) -> dict:
    return json.loads((registry / version / "manifest.json").read_text())


def artifact_keys(state) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_filter = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=run_filter))
    return {a.key for a in artifacts}


def task_names(state) -> set[str]:
    return {run.name for run in read_task_runs(state)}


def test_trains_on_the_union_and_reports_both_evaluations_skips_unless_forced(tmp_path):
    registry, data = tmp_path / "registry", write_dataset(tmp_path / "mnist")
    images, labels = new_digits(100, 20)
    folder = write_batch(store(), images, labels, name="writers-a")
    write_batch(store(), *new_digits(60, 21), name="noise", quarantined=True)
    held = int(held_out_mask(images).sum())

    state = run_flow(data_dir=str(data), registry=str(registry))

    outcome = state.result()
    assert outcome.promoted, state.message
    manifest = manifest_of(registry, "v1")
    assert manifest["data"]["rows"] == {
        "train": 1200, "test": 300, "new_train": 100 - held, "new_held_out": held}
    new_data = manifest["metrics"]["new_data"]
    assert new_data["rows"] == held and 0.9 <= new_data["accuracy"] <= 1
    assert sum(row["support"] for row in new_data["per_class"]) == held
    assert new_data["production_version"] is None  # nothing to re-score yet
    assert manifest["metrics"]["accuracy"] == outcome.accuracy  # MNIST test, as before
    snapshot = manifest["data"]["snapshot"]
    assert [b["id"] for b in snapshot["batches"]] == [folder.name]  # not the quarantined one
    assert snapshot["mnist"] == manifest["data"]["sha256"]
    assert manifest["gate"]["new_data_accuracy"] == new_data["accuracy"]
    assert {"plots/new_data/confusion_matrix.png", "plots/confusion_matrix.png"} <= set(
        manifest["files"])
    assert {"snapshot", "union", "evaluate", "evaluate-new-data"} <= task_names(state)
    assert {"per-class-metrics", "evaluation-summary", "new-data-per-class-metrics",
            "new-data-evaluation-summary"} <= artifact_keys(state)  # both, in the UI

    # The same data again is skipped and leaves the registry as it was; other settings
    # train again (tests/unit/test_snapshot.py holds that rule: is_unchanged).
    before = snapshot_tree(registry)
    skipped = run_flow(data_dir=str(data), registry=str(registry))
    assert skipped.is_completed() and skipped.name == "Completed"
    assert skipped.message == "Skipped: no new data since v1"
    assert skipped.result().skipped
    assert skipped.result().line() == "skipped: no new data since v1"
    assert "skipped" in read_flow_run(skipped).tags
    assert "train" not in task_names(skipped) and "validate-raw" not in task_names(skipped)
    assert snapshot_tree(registry) == before

    # Forced, a second run trains, and re-scores production (v1) on the same held-out images.
    state = run_flow(data_dir=str(data), registry=str(registry), force=True)
    assert state.result().promoted, state.message
    second = manifest_of(registry, "v2")
    assert second["metrics"]["new_data"]["production_version"] == "v1"
    assert second["metrics"]["new_data"]["production_accuracy"] == new_data["accuracy"]
    assert "new-data accuracy" in second["gate"]["reason"]


def write_with_extra_style(folder: Path, style: int, rows: int) -> Path:
    """The synthetic MNIST, its train split grown by `rows` digits of another style."""
    write_dataset(folder)
    from digits.data.ingest import parse_idx

    images = parse_idx(folder / IDX_FILES["train_images"], 0x803)
    labels = parse_idx(folder / IDX_FILES["train_labels"], 0x801)
    extra_x, extra_y = new_digits(rows, 30, style)
    write_idx(folder / IDX_FILES["train_images"], np.concatenate([images, extra_x]))
    write_idx(folder / IDX_FILES["train_labels"], np.concatenate([labels, extra_y]))
    return folder


def test_a_challenger_worse_on_new_data_is_rejected(tmp_path):
    registry = tmp_path / "registry"
    # Production has seen style 5; the batch trains the challenger on style 0 only and
    # holds out style-5 digits, which the challenger has never seen.
    seen = write_with_extra_style(tmp_path / "seen", style=5, rows=500)
    assert run_flow(data_dir=str(seen), registry=str(registry)).result().promoted
    write_batch(store(), *split_styles(150, train_style=0, held_out_style=5), name="style-5")
    before = snapshot_tree(registry)

    state = run_flow(data_dir=str(write_dataset(tmp_path / "plain")), registry=str(registry))

    outcome = state.result()
    assert not outcome.promoted and outcome.accuracy >= 0.97, state.message
    assert re.search(r"rejected \(new-data accuracy 0\.\d{4} < production v1 \([01]\.\d{4}\) - "
                     r"tolerance 0\.002\); registry unchanged", state.message), state.message
    assert snapshot_tree(registry) == before


def test_cli_skip_then_reproduce_within_0_001_and_exit_4_naming_a_lost_batch(tmp_path, cli):
    registry, data = tmp_path / "registry", write_dataset(tmp_path / "mnist")
    folder = write_batch(store(), *new_digits(80, 50), name="writers-c")
    code, out, _ = cli("run", *CLI_FAST, "--data-dir", data, "--registry", registry)
    assert code == 0 and out.strip().splitlines()[-1].startswith("promoted v1 ")

    code, out, _ = cli("run", *CLI_FAST, "--data-dir", data, "--registry", registry)
    assert (code, out.strip().splitlines()[-1]) == (0, "skipped: no new data since v1")

    before = snapshot_tree(registry)
    code, out, err = cli("reproduce", "v1", "--registry", registry)
    assert code == 0, err
    lines = out.strip().splitlines()
    recorded = float(re.fullmatch(r"v1 manifest accuracy (\S+)", lines[-4]).group(1))
    again = float(re.fullmatch(r"reproduced accuracy (\S+)", lines[-3]).group(1))
    difference = float(re.fullmatch(r"difference (\S+)", lines[-2]).group(1))
    assert abs(difference) <= 0.001 and abs(again - recorded) <= 0.001
    assert lines[-1].startswith("new data: manifest ")
    assert snapshot_tree(registry) == before  # reproduce writes nothing

    shutil.rmtree(folder)
    code, _, err = cli("reproduce", "v1", "--registry", registry)
    assert code == 4
    assert re.fullmatch(r"error: batch 'writers-c' \([0-9a-f]{12}\): missing from .*",
                        err.strip().splitlines()[-1])
