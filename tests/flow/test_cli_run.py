"""`digits run` end to end on generated data: exit codes, one-line errors, registry untouched."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from digits.config import IDX_FILES
from tests.conftest import run_cli
from tests.helpers.synth import idx_bytes, snapshot_tree, write_dataset

FAST = ["--model", "mlp", "--epochs", "3", "--min-train-rows", "1000"]


def corrupt(folder, case):
    """Damage a good data folder in one of the ways users meet; return the file at fault."""
    images, labels = folder / IDX_FILES["train_images"], folder / IDX_FILES["train_labels"]
    if case == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif case == "wrong magic":
        images.write_bytes(b"\x00\x00\x08\x01" + images.read_bytes()[4:])
    elif case == "gz that is not gzip":
        images.rename(images.with_name(images.name + ".gz"))
        return images.with_name(images.name + ".gz")
    elif case == "count mismatch":
        labels.write_bytes(idx_bytes(np.zeros(1199, np.uint8)))
        return labels
    elif case == "label out of range":
        values = np.frombuffer(labels.read_bytes()[8:], np.uint8).copy()
        values[0] = 11
        labels.write_bytes(idx_bytes(values))
        return "train"  # the validation suite names the split
    elif case == "missing file":
        labels.unlink()
        return labels
    return images


@pytest.fixture(scope="module")
def trained_v1(tmp_path_factory) -> Path:
    """A registry whose v1 a real `digits run` trained, made once for this module's tests."""
    root = tmp_path_factory.mktemp("trained-v1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITS_ARTIFACTS", str(root / "artifacts"))  # as tests/flow/conftest.py
        patch.setenv("DIGITS_DATA", str(root / "data-cache"))
        good = write_dataset(root / "good")
        code, out, _ = run_cli(patch, "run", *FAST, "--data-dir", good, "--registry", root / "r")
    assert (code, out.strip().splitlines()[-1][:12]) == (0, "promoted v1 ")
    return root / "r"


@pytest.fixture
def registry_with_v1(tmp_path, trained_v1) -> Path:
    """This test's own copy of the trained registry: tests may damage or extend theirs."""
    return Path(shutil.copytree(trained_v1, tmp_path / "registry", symlinks=True))


# Only a failed expectation is "data validation failed"; a file we cannot parse says so.
@pytest.mark.parametrize(
    "case, says",
    [
        ("truncated", "invalid IDX file"),
        ("wrong magic", "invalid IDX file"),
        ("gz that is not gzip", "invalid file"),
        ("count mismatch", "labels for"),
        ("label out of range", "data validation failed"),
        ("missing file", "missing IDX file"),
    ],
)
def test_bad_data_exits_4_and_leaves_registry_identical(
    case, says, tmp_path, cli, registry_with_v1
):
    folder = write_dataset(tmp_path / "bad")
    at_fault = corrupt(folder, case)
    before = snapshot_tree(registry_with_v1)

    code, out, err = cli("run", *FAST, "--data-dir", folder, "--registry", registry_with_v1)

    assert code == 4, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: ") and says in message
    assert (says == "data validation failed") == message.startswith("error: data validation")
    assert str(at_fault if isinstance(at_fault, str) else at_fault.name) in message
    assert snapshot_tree(registry_with_v1) == before


@pytest.mark.parametrize("folder", ["empty", "absent"])
def test_empty_or_absent_folder_exits_4(folder, tmp_path, cli):
    path = tmp_path / folder
    if folder == "empty":
        path.mkdir()
    code, _, err = cli("run", *FAST, "--data-dir", path, "--registry", tmp_path / "r")
    assert code == 4
    assert str(path) in err
    assert not (tmp_path / "r").exists()


def test_gzipped_data_of_another_kind_is_judged_by_the_gate(tmp_path, cli):
    # Well-formed data that is not MNIST: validation passes, the gate decides.
    folder = write_dataset(tmp_path / "gz", compress=True, shuffle_test_labels=True)
    code, out, _ = cli("run", *FAST, "--data-dir", folder, "--registry", tmp_path / "r")
    assert code == 3
    assert out.strip().splitlines()[-1].startswith("rejected (accuracy 0.")
    assert out.strip().endswith("registry unchanged")


def test_second_run_regression_check_and_models_json(tmp_path, cli, registry_with_v1):
    data = write_dataset(tmp_path / "again")  # the same bytes as v1's: --force, or it skips
    code, out, _ = cli("run", *FAST, "--force", "--data-dir", data, "--registry", registry_with_v1)
    assert code == 0 and "promoted v2" in out

    code, out, _ = cli("models", "--json", "--registry", registry_with_v1)
    versions = json.loads(out)
    assert [v["version"] for v in versions] == ["v1", "v2"]
    assert versions[1]["aliases"] == ["production"]
    assert versions[1]["model"] == "mlp" and versions[1]["metrics"]["accuracy"] >= 0.97
    gate = versions[1]["gate"]
    assert gate["production_accuracy"] == versions[0]["metrics"]["accuracy"]
