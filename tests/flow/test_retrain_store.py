"""`retrain(store_dir=...)`, the batch store a deployment names (prefect.yaml), and what a
run refuses in it: the happy path runs in tests/integration/test_batch_trigger.py on a real
server."""

from tests.helpers.flows import read_task_runs, run_flow
from tests.helpers.synth import write_dataset


def test_a_store_missing_on_this_machine_fails_the_run_before_anything_else(tmp_path):
    missing = tmp_path / "elsewhere" / "data"  # e.g. a path from the machine that added
    state = run_flow(data_dir=str(write_dataset(tmp_path / "mnist")),
                     registry=str(tmp_path / "registry"), store_dir=str(missing))

    assert state.is_failed()
    assert state.message == f"{missing}: no batch store on this machine"
    assert not missing.exists()  # no MNIST download into a fresh folder
    assert not (tmp_path / "registry").exists()
    assert read_task_runs(state) == []


def test_a_batch_copied_from_quarantine_stops_the_run_before_training(tmp_path):
    """Issue 28, repro 3: a quarantined batch copied by hand into batches/ keeps its id, and
    a run trained on it; now the run names it and stops (exit 4) before any training."""
    import shutil

    from digits.errors import DataError
    from tests.helpers.batchstore import new_digits, write_batch

    store = tmp_path / "store"
    write_batch(store, *new_digits(50, 10), name="good")
    quarantined = write_batch(store, *new_digits(30, 12), name="noise", quarantined=True)
    shutil.copytree(quarantined, store / "batches" / quarantined.name)
    state = run_flow(data_dir=str(write_dataset(tmp_path / "mnist")),
                     registry=str(tmp_path / "registry"), store_dir=str(store))

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), DataError)
    assert f"{quarantined.name[:12]} (noise): its record says 'quarantined'" in state.message
    assert not (tmp_path / "registry").exists()
    assert "train" not in {run.name for run in read_task_runs(state)}
