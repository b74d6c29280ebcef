"""`retrain(store_dir=...)`, the batch store the new-data trigger passes (prefect.yaml): the
happy path runs in tests/integration/test_batch_trigger.py on a real server."""

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
