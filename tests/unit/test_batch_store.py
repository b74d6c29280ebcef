"""The batch store: kill-safe writes, no-op re-adds, quarantine never trained on."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from digits.data.batches import accepted_batches, find_batch, list_batches, store_batch
from digits.data.intake import Source, read_source, source_id

ROOT = Path(__file__).resolve().parents[2]


def source(seed: int, n: int = 5) -> Source:
    rng = np.random.default_rng(seed)
    return Source("x", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                  rng.integers(0, 10, n), [])


def store(data_dir, batch, status="accepted"):
    record = {"id": source_id(batch), "name": "x", "rows": len(batch.images),
              "status": status, "reason": None if status == "accepted" else "rows: observed 5",
              "added_at": "2026-01-01T00:00:00+00:00"}
    return store_batch(data_dir, batch, record, {"status": status})


def test_an_accepted_batch_reads_back_under_its_id(tmp_path):
    batch = source(1)
    folder, written = store(tmp_path, batch)
    assert written and folder == tmp_path / "batches" / source_id(batch)
    [stored] = accepted_batches(tmp_path)
    assert stored.id == source_id(batch) and (stored.images == batch.images).all()
    assert {"batch.json", "images.npy", "labels.npy", "report.json"} <= {
        p.name for p in folder.iterdir()}


def test_the_same_batch_twice_is_a_no_op(tmp_path):
    store(tmp_path, source(1))
    before = (tmp_path / "batches" / source_id(source(1)) / "batch.json").read_bytes()
    _, written = store(tmp_path, source(1))
    assert not written
    assert (tmp_path / "batches" / source_id(source(1)) / "batch.json").read_bytes() == before


def test_quarantine_is_kept_but_never_trained_on(tmp_path):
    store(tmp_path, source(1))
    store(tmp_path, source(2), status="quarantined")
    assert [b.id for b in accepted_batches(tmp_path)] == [source_id(source(1))]
    assert (tmp_path / "quarantine" / source_id(source(2)) / "report.json").is_file()
    assert find_batch(tmp_path, source_id(source(2)))["status"] == "quarantined"
    assert [r["status"] for r in list_batches(tmp_path)] == ["accepted", "quarantined"]


def test_sigkill_while_storing_leaves_no_half_batch_and_the_next_add_sweeps(tmp_path):
    worker = subprocess.Popen([sys.executable, str(ROOT / "tests/helpers/batch_worker.py"),
                               str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "written"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    left = [p.name for p in (tmp_path / "batches").iterdir()]
    assert all(name.startswith(".") for name in left), left  # only staging and the lock
    assert any(name.startswith(".staging-") for name in left)
    assert accepted_batches(tmp_path) == []
    store(tmp_path, source(1))  # the next add sweeps what the killed one left
    assert sorted(p.name for p in (tmp_path / "batches").iterdir()) == [
        ".lock", source_id(source(1))]


def test_a_folder_batch_reads_only_its_images(tmp_path):
    digit = np.zeros((64, 48), np.uint8)
    digit[10:50, 20:26] = 255
    for label, name in ((0, "a.png"), (7, "b.PNG")):  # suffixes match in any case
        (tmp_path / str(label)).mkdir()
        Image.fromarray(digit).save(tmp_path / str(label) / name, format="PNG")
    (tmp_path / "0" / "notes.txt").write_text("scanned 2026-01-01")  # a stray file, not a digit
    (tmp_path / "7" / "Thumbs.db").write_bytes(b"\x00" * 16)
    source = read_source(tmp_path)
    assert source.images.shape == (2, 28, 28) and source.labels.tolist() == [0, 7]
    assert source.unreadable == []


def test_an_unreadable_batch_is_named_skipped_and_listed(tmp_path, caplog):
    store(tmp_path, source(1))
    broken, _ = store(tmp_path, source(2))
    (broken / "images.npy").write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="digits.data.batches"):
        assert [b.id for b in accepted_batches(tmp_path)] == [source_id(source(1))]
    assert f"{broken}: unreadable batch" in caplog.text and "skipped" in caplog.text
    listed = {r["id"]: r for r in list_batches(tmp_path)}
    assert listed[source_id(source(1))]["status"] == "accepted"
    assert listed[broken.name]["status"] == "unreadable"
    assert listed[broken.name]["reason"].startswith(f"{broken}: unreadable batch")


def test_a_batch_folder_without_its_record_is_listed_unreadable(tmp_path):
    broken, _ = store(tmp_path, source(2), status="quarantined")
    (broken / "batch.json").unlink()
    [record] = list_batches(tmp_path)
    assert (record["id"], record["status"]) == (broken.name, "unreadable")
    assert "batch.json" in record["reason"]


def test_batches_accepted_during_the_checks_are_rechecked_under_the_lock(tmp_path):
    first = source(1)
    store(tmp_path, first)  # stored while the second batch's checks ran
    second = source(2)
    seen = []

    def recheck(batches):
        seen.append([b.id for b in batches])
        return ({"id": source_id(second), "name": "x", "rows": 5, "status": "quarantined",
                 "reason": "leakage: observed 1"}, {"status": "quarantined"})

    record = {"id": source_id(second), "name": "x", "rows": 5, "status": "accepted"}
    folder, written = store_batch(tmp_path, second, record, {"status": "accepted"}, recheck,
                                  compared=())
    assert seen == [[source_id(first)]]
    assert written and folder == tmp_path / "quarantine" / source_id(second)
    assert find_batch(tmp_path, source_id(second))["reason"] == "leakage: observed 1"
    assert [b.id for b in accepted_batches(tmp_path)] == [source_id(first)]
    assert not [p for p in (tmp_path / "batches").iterdir() if p.name.startswith(".staging")]
    # Batches the checks already compared with are not read again.
    third = source(3)
    record = {"id": source_id(third), "name": "x", "rows": 5, "status": "accepted"}
    store_batch(tmp_path, third, record, {}, recheck, compared=[source_id(first)])
    assert len(seen) == 1
    assert find_batch(tmp_path, source_id(third))["status"] == "accepted"


# --- A run trains only on what the checks accepted (issue 28, repro 3) -----------------


def test_each_stored_batch_records_its_checks_and_a_run_verifies_it(tmp_path):
    from digits.checks.version import CHECKS_VERSION
    from digits.data.batches import verified_batches
    from digits.files import sha256_file

    folder, _ = store(tmp_path, source(1))
    record = find_batch(tmp_path, folder.name)
    assert record["checks_version"] == CHECKS_VERSION
    assert record["files_sha256"] == {
        name: sha256_file(folder / name) for name in ("images.npy", "labels.npy")}
    assert [b.id for b in verified_batches(tmp_path)] == [folder.name]


def test_a_folder_copied_from_quarantine_into_batches_stops_the_run(tmp_path):
    """The repro: a quarantined folder copied by hand into batches/ (its id still matches)
    was trained on; now the run names it and stops (exit 4), training on nothing."""
    import shutil

    import pytest

    from digits.data.batches import verified_batches
    from digits.errors import DataError

    good, _ = store(tmp_path, source(1))
    quarantined, _ = store(tmp_path, source(2), status="quarantined")
    shutil.copytree(quarantined, tmp_path / "batches" / quarantined.name)
    with pytest.raises(DataError) as refused:
        verified_batches(tmp_path)
    message = str(refused.value)
    assert DataError.exit_code == 4 and "\n" not in message
    assert quarantined.name[:12] in message and good.name[:12] not in message
    assert "quarantined" in message and "digits data remove" in message


def test_a_batch_changed_since_its_checks_or_stored_before_records_stops_the_run(tmp_path):
    import json

    import pytest

    from digits.data.batches import verified_batches
    from digits.errors import DataError

    edited, _ = store(tmp_path, source(1))
    # Same arrays to the id (it hashes them as uint8), other bytes than the checks saw.
    np.save(edited / "labels.npy", np.load(edited / "labels.npy").astype(np.int64))
    legacy, _ = store(tmp_path, source(2))
    record = json.loads((legacy / "batch.json").read_text())
    del record["checks_version"], record["files_sha256"]  # as stored before this record
    (legacy / "batch.json").write_text(json.dumps(record))
    with pytest.raises(DataError) as refused:
        verified_batches(tmp_path)
    message = str(refused.value)
    assert f"{edited.name[:12]} (x): labels.npy differs from what the checks saw" in message
    assert f"{legacy.name[:12]} (x): no record of its checks" in message
    listed = {r["id"]: r for r in list_batches(tmp_path)}
    assert {listed[f.name]["status"] for f in (edited, legacy)} == {"unverified"}


def test_a_batch_checked_by_an_untrusted_version_of_the_checks_stops_the_run(
        tmp_path, monkeypatch):
    import pytest

    from digits.data import check_record
    from digits.data.batches import verified_batches
    from digits.errors import DataError

    folder, _ = store(tmp_path, source(1))
    monkeypatch.setattr(check_record, "TRUSTED_SINCE", 2)
    monkeypatch.setattr(check_record, "CHECKS_VERSION", 2)
    with pytest.raises(DataError, match=f"{folder.name[:12]} .*checks version 1, runs"):
        verified_batches(tmp_path)


def test_digits_data_remove_takes_a_batch_out_to_be_added_again(tmp_path, cli):
    batch = source(1)
    folder, _ = store(tmp_path, batch)
    out = tmp_path / "again.npz"
    code, stdout, stderr = cli("data", "remove", folder.name[:12], "--out", out,
                               "--store", tmp_path)
    assert code == 0, stderr
    assert not folder.exists() and find_batch(tmp_path, folder.name) is None
    with np.load(out) as saved:
        assert set(saved.files) == {"images", "labels"}
        assert (saved["images"] == batch.images).all()
        assert (saved["labels"] == batch.labels).all()
    assert source_id(read_source(out)) == folder.name  # adds back under the same id
    assert stdout.strip() == f"removed batch {folder.name[:12]} (x); its images and labels " \
        f"are in {out}"
    code, _, stderr = cli("data", "remove", folder.name[:12], "--store", tmp_path)
    assert code == 2 and "no batch with this id" in stderr
