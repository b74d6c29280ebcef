"""The prediction log (digits.monitoring: records, log, index, reader): what
`digits serve --log-dir` keeps."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from digits.errors import DataError, UsageError
from digits.monitoring.feedback import export_feedback
from digits.monitoring.log import LogLimits, PredictionLog
from digits.monitoring.reader import read_log
from digits.monitoring.records import (
    MARKER,
    LabelsFull,
    UnknownPrediction,
    label_files,
    log_files,
    segment_files,
)
from digits.monitoring.rotation import release_labels
from tests.helpers.log_writer import start_writer
from tests.helpers.serving import mnist_like


def scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(10), size=n).astype(np.float32)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in log_files(folder))


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "log"


def test_a_record_reads_back_whole_and_in_order(folder):
    images, probabilities = mnist_like(5), scores(5)
    floats = images.astype(np.float32) + 0.4  # float pixels are stored rounded to uint8
    before = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ms")
    with PredictionLog(folder) as log:
        first = log.record("v3", "production", floats[:2], probabilities[:2])
        second = log.record("v4", "staging", images[2:], probabilities[2:])
    after = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ms")

    logged = read_log(folder)
    assert len(first) == 2 and len(second) == 3 and len(set(first + second)) == 5
    assert logged.ids.tolist() == first + second
    assert logged.versions.tolist() == ["v3"] * 2 + ["v4"] * 3
    assert logged.refs.tolist() == ["production"] * 2 + ["staging"] * 3
    assert logged.digits.dtype == np.int64
    assert logged.digits.tolist() == probabilities.argmax(axis=1).tolist()
    assert logged.probabilities.dtype == np.float32
    np.testing.assert_array_equal(logged.probabilities, probabilities)  # exactly
    assert logged.images.dtype == np.uint8 and logged.images.shape == (5, 28, 28)
    np.testing.assert_array_equal(logged.images, images)
    assert logged.labels.tolist() == [-1] * 5
    assert logged.times.dtype == np.dtype("datetime64[ms]")
    assert (before <= logged.times).all() and (logged.times <= after).all()


def test_an_answer_flagged_not_a_digit_is_logged_so_and_older_records_read_as_unflagged(
    folder,
):
    with PredictionLog(folder) as log:
        log.record("v3", "production", mnist_like(3), scores(3), np.array([True, False, True]))
        log.record("v3", "production", mnist_like(1), scores(1))  # a caller with no rule
        with pytest.raises(ValueError, match=r"not_a_digit must be \(2,\)"):
            log.record("v3", "production", mnist_like(2), scores(2), np.array([True]))
    assert read_log(folder).not_a_digit.tolist() == [True, False, True, False]

    (segment,) = segment_files(folder)
    lines = segment.read_text().splitlines(keepends=True)
    old = json.loads(lines[0])
    del old["not_a_digit"]  # as written before the rule
    segment.write_text(json.dumps(old) + "\n" + "".join(lines[1:]))
    assert read_log(folder).not_a_digit.tolist() == [False, False, True, False]
    segment.write_text(lines[0].replace('"not_a_digit": true', '"not_a_digit": "yes"'))
    with pytest.raises(DataError, match="not_a_digit 'yes' is not true or false"):
        read_log(folder)


def test_an_empty_log_reads_as_no_rows_and_other_folders_are_refused(folder, tmp_path):
    PredictionLog(folder).close()
    empty = read_log(folder)
    assert len(empty) == 0 and empty.images.shape == (0, 28, 28)
    assert empty.probabilities.shape == (0, 10)

    with pytest.raises(DataError, match="does not exist"):
        read_log(tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prediction log"):
        read_log(other)
    with pytest.raises(DataError, match="not a prediction log"):  # rotation would delete in it
        PredictionLog(other)
    assert (other / "notes.txt").read_text() == "mine"


def test_a_corrupt_record_inside_a_segment_names_the_file_and_line(folder):
    with PredictionLog(folder) as log:
        log.record("v1", "production", mnist_like(2), scores(2))
    (segment,) = segment_files(folder)
    lines = segment.read_text().splitlines(keepends=True)
    segment.write_text(lines[0] + "{garbage\n" + lines[1])
    with pytest.raises(DataError, match=rf"{segment.name}, line 2"):
        read_log(folder)


def test_segments_rotate_and_the_oldest_go_beyond_the_bound(folder):
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000)  # ~1.4 KB a record
    with PredictionLog(folder, limits) as log:
        ids = [log.record("v1", "production", mnist_like(1, i), scores(1, i))[0]
               for i in range(200)]
        # Never more than the bound plus the segment in use.
        assert folder_bytes(folder) <= limits.max_bytes + limits.segment_bytes
        assert all(path.stat().st_size <= limits.segment_bytes for path in segment_files(folder))
    logged = read_log(folder)
    assert 15 < len(logged) < 50
    assert logged.ids.tolist() == ids[-len(logged):]  # the newest kept, none missing between
    with PredictionLog(folder, limits) as log, pytest.raises(UnknownPrediction):
        log.correct(ids[0], 3)  # rotated away


def test_a_segment_in_use_by_another_process_is_never_pruned(folder):
    limits = LogLimits(segment_bytes=4_000, max_bytes=4_000)
    other = PredictionLog(folder, limits)
    (kept,) = other.record("v1", "production", mnist_like(1), scores(1))
    with PredictionLog(folder, limits) as log:
        for i in range(20):  # rotates, each time over the bound
            log.record("v1", "production", mnist_like(1, i), scores(1, i))
    assert kept in read_log(folder).ids.tolist()
    other.close()
    with PredictionLog(folder, limits) as log:  # closed now, so it is the oldest to go
        for i in range(5):
            log.record("v1", "production", mnist_like(1, i), scores(1, i))
    assert kept not in read_log(folder).ids.tolist()


def test_a_killed_writer_loses_only_its_torn_last_line(folder):
    writer = start_writer(folder, 0, forever=True)
    written = [writer.stdout.readline().strip() for _ in range(50)]  # each id printed once written
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    (segment,) = segment_files(folder)
    # One os.write of a regular file is not cut by SIGKILL on Linux, so the kill above tears
    # nothing by itself; a full disk or another OS can. Leave what such a kill leaves.
    whole = segment.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    with segment.open("ab") as handle:
        handle.write(last[: len(last) // 2])

    logged = read_log(folder)
    assert written == logged.ids.tolist()[: len(written)]  # nothing acknowledged was lost
    assert len(logged) >= len(written)
    with PredictionLog(folder) as log:  # a new writer starts its own segment and can correct
        assert log.correct(written[-1], 4).label == 4
        log.record("v1", "production", mnist_like(1), scores(1))
    assert read_log(folder).labels[len(written) - 1] == 4


def test_two_processes_share_a_folder_and_each_sees_the_others_ids(folder):
    log = PredictionLog(folder)  # made before the others write: its index must catch up
    writers = [start_writer(folder, 100) for _ in range(2)]
    outputs = [writer.communicate(timeout=120) for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], outputs
    ids = [out.split() for out, _ in outputs]

    logged = read_log(folder)
    assert len(logged) == 200 and len(set(logged.ids.tolist())) == 200
    assert len(segment_files(folder)) == 2  # a segment per process
    for own in ids:  # each process's records in its own order
        positions = [logged.ids.tolist().index(id_) for id_ in own]
        assert positions == sorted(positions)
    correction = log.correct(ids[1][7], 2)
    assert correction.digit == 7 and not correction.confirmed
    assert log.correct(ids[0][3], 3).confirmed
    log.close()
    labels = dict(zip(read_log(folder).ids.tolist(), read_log(folder).labels.tolist()))
    assert labels[ids[1][7]] == 2 and labels[ids[0][3]] == 3


def test_an_unknown_or_malformed_id_is_refused_and_writes_nothing(folder):
    with PredictionLog(folder) as log:
        log.record("v1", "production", mnist_like(1), scores(1))
        size = folder_bytes(folder)
        for id_ in ("0" * 32, "not-an-id", "../" * 11, ""):
            with pytest.raises(UnknownPrediction, match="no logged prediction"):
                log.correct(id_, 1)
        for label in (-1, 10, True, 2.0, "3"):
            with pytest.raises(ValueError, match="label"):
                log.correct(read_log(folder).ids[0], label)
    assert folder_bytes(folder) == size


def test_a_repeat_writes_nothing_and_the_latest_label_counts(folder):
    with PredictionLog(folder) as log:
        (id_,) = log.record("v1", "production", mnist_like(1), scores(1))
        first = log.correct(id_, 5)
        size = folder_bytes(folder)
        time.sleep(0.002)
        assert log.correct(id_, 5) == first  # the earlier correction, its time too
        assert folder_bytes(folder) == size
        assert read_log(folder).labels.tolist() == [5]
        time.sleep(0.002)
        assert log.correct(id_, 6).label == 6
        assert read_log(folder).labels.tolist() == [6]
        time.sleep(0.002)
        assert log.correct(id_, 5).time > first.time  # back to 5: a new record, not the old
        assert folder_bytes(folder) > size
    assert read_log(folder).labels.tolist() == [5]
    with PredictionLog(folder) as again:  # another writer sees the same history
        assert again.correct(id_, 5).time > first.time
    kinds = [json.loads(line)["kind"] for path in log_files(folder)
             for line in path.read_text().splitlines()]
    assert kinds.count("correction") == 3


def test_since_keeps_the_predictions_at_or_after_it(folder):
    with PredictionLog(folder) as log:
        old = log.record("v1", "production", mnist_like(3), scores(3))
        time.sleep(0.01)
        cut = datetime.now(UTC)
        time.sleep(0.01)
        new = log.record("v1", "production", mnist_like(2), scores(2))
    assert read_log(folder, since=cut).ids.tolist() == new
    elsewhere = cut.astimezone(timezone(timedelta(hours=-5)))  # the same moment, another zone
    assert read_log(folder, since=elsewhere).ids.tolist() == new
    assert read_log(folder, since=cut.replace(tzinfo=None)).ids.tolist() == new  # naive: UTC
    assert read_log(folder, since=cut - timedelta(days=1)).ids.tolist() == old + new
    assert len(read_log(folder, since=cut + timedelta(days=1))) == 0


def test_the_folder_is_marked_and_the_limits_are_checked(folder):
    PredictionLog(folder).close()
    assert json.loads((folder / MARKER).read_text())["format"] == "digits prediction log"
    assert os.listdir(folder) == [MARKER]  # no segment until something is recorded
    with pytest.raises(UsageError, match="max_bytes"):
        LogLimits(segment_bytes=10, max_bytes=5)


# --- labelled answers are kept until exported --------------------------------------------


def flood(log: PredictionLog, n: int) -> list[str]:
    return [log.record("v1", "production", mnist_like(1, i), scores(1, i))[0] for i in range(n)]


def test_a_labelled_answer_outlives_a_flood_until_a_batch_holds_it(folder, tmp_path):
    """The issue: a flood of answers rotated the log, and the earlier labelled answer then
    got a 404 for its feedback and was missing from `digits feedback export`."""
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000)  # ~1.4 KB a record
    with PredictionLog(folder, limits) as log:
        (labelled, unlabelled) = log.record("v1", "production", mnist_like(2), scores(2))
        log.correct(labelled, 7, "alice")
        flood(log, 200)  # ~280 KB: the first segments rotate away many times over
        logged = read_log(folder)
        assert unlabelled not in logged.ids.tolist()  # rotated away, as before
        assert logged.labels[logged.ids.tolist().index(labelled)] == 7
        assert log.correct(labelled, 2, "alice").label == 2  # a person may change their mind
        assert folder_bytes(folder) <= limits.max_bytes + limits.segment_bytes + 10_000
    exported = export_feedback(folder, tmp_path / "batch.npz")
    assert exported.corrected + exported.confirmed == 1
    assert np.load(tmp_path / "batch.npz")["labels"].tolist() == [2]

    with PredictionLog(folder, limits) as log:  # a file to look at is no batch: still kept
        flood(log, 100)
    assert labelled in read_log(folder).ids.tolist()
    assert release_labels(folder, [labelled]) and not label_files(folder)  # as `export --add`
    with PredictionLog(folder, limits) as log:  # stored: it rotates like any other answer
        flood(log, 100)
    assert labelled not in read_log(folder).ids.tolist()


def test_labels_are_released_only_once_exported_and_only_from_closed_files(folder):
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000)
    log = PredictionLog(folder, limits)
    first, second = log.record("v1", "production", mnist_like(2), scores(2))
    log.correct(first, 1, "alice")
    assert release_labels(folder, {first}) == 0  # its writer still appends to that file
    flood(log, 10)  # a new segment: the writer closes its label file too
    log.correct(second, 3, "alice")
    assert release_labels(folder, {first}) == 1
    log.close()
    assert release_labels(folder, {first}) == 0  # second's file holds an unexported label
    with PredictionLog(folder, limits) as other:
        flood(other, 200)
    logged = read_log(folder)
    assert first not in logged.ids.tolist()
    assert logged.labels[logged.ids.tolist().index(second)] == 3


def test_labels_awaiting_export_are_bounded_and_the_next_is_refused(folder):
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000, label_bytes=5_000)
    with PredictionLog(folder, limits) as log:
        ids = log.record("v1", "production", mnist_like(5), scores(5))
        for id_ in ids[:3]:  # ~1.5 KB each: a prediction's copy and its label
            log.correct(id_, 4, "alice")
        with pytest.raises(LabelsFull, match="digits feedback export"):
            log.correct(ids[3], 4, "alice")
        assert log.correct(ids[0], 4, "alice").label == 4  # a repeat writes nothing
    assert read_log(folder).labels.tolist() == [4, 4, 4, -1, -1]
    release_labels(folder, set(ids[:3]))
    with PredictionLog(folder, limits) as log:
        assert log.correct(ids[3], 4, "alice").label == 4


def test_another_process_finds_a_labelled_answer_after_its_segment_rotated(folder):
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000)
    with PredictionLog(folder, limits) as log:
        (labelled,) = log.record("v1", "production", mnist_like(1), scores(1))
        other = PredictionLog(folder, limits)
        assert other.correct(labelled, 6).label == 6  # indexed while its segment exists
        flood(log, 200)
        assert other.correct(labelled, 8).digit == scores(1).argmax()  # from the copy
        other.close()
        assert log.correct(labelled, 6).label == 6
    assert read_log(folder).labels.tolist()[read_log(folder).ids.tolist().index(labelled)] == 6
    assert len(label_files(folder)) == 2


# --- sources of labels: trusted, suggested, dismissed (issue 28) ---------------------------


def correction_records(folder: Path, prefix: str) -> list[dict]:
    return [record for path in sorted(label_files(folder)) if path.name.startswith(prefix)
            for record in map(json.loads, path.read_text().splitlines())
            if record["kind"] == "correction"]


def test_a_label_records_its_source_and_credential(folder):
    with PredictionLog(folder) as log:
        ids = log.record("v1", "production", mnist_like(3), scores(3))
        trusted = log.correct(ids[0], 4, "alice")
        suggested = log.correct(ids[1], 5)
        log.correct(ids[2], 6)
        dismissed = log.dismiss(ids[2], 6, "review:bob")
    assert (trusted.source, trusted.credential, trusted.trusted) == ("trusted", "alice", True)
    assert (suggested.source, suggested.credential, suggested.trusted) == (
        "suggestion", None, False)
    assert (dismissed.source, dismissed.credential) == ("dismissed", "review:bob")
    logged = read_log(folder)
    assert logged.labels.tolist() == [4, 5, 6]
    assert logged.sources.tolist() == ["trusted", "suggestion", "dismissed"]
    assert logged.credentials.tolist() == ["alice", "", "review:bob"]
    # Trusted labels and suggestions are kept apart, each in files of their own.
    [label] = correction_records(folder, "labels-")
    assert (label["label"], label["source"], label["credential"]) == (4, "trusted", "alice")
    suggestions = correction_records(folder, "suggestions-")
    assert [(r["label"], r["source"], r.get("credential")) for r in suggestions] == [
        (5, "suggestion", None), (6, "suggestion", None), (6, "dismissed", "review:bob")]
    assert "credential" not in suggestions[0]


def test_a_label_written_before_sources_reads_as_a_suggestion(folder):
    """Old logs stay readable, and what they hold trains nothing until someone reviews it."""
    with PredictionLog(folder) as log:
        (id_,) = log.record("v1", "production", mnist_like(1), scores(1))
    [segment] = segment_files(folder)
    with segment.open("a") as handle:  # as the log wrote corrections before sources
        handle.write(json.dumps({"kind": "correction", "id": id_,
                                 "time": "2999-01-01T00:00:00.000Z", "label": 3}) + "\n")
    logged = read_log(folder)
    assert (logged.labels.tolist(), logged.sources.tolist()) == ([3], ["suggestion"])
    with PredictionLog(folder) as log:
        assert log.correct(id_, 3).time.year == 2999  # the same suggestion: nothing written
    with pytest.raises(DataError, match="no trusted corrections or confirmations"):
        export_feedback(folder, folder.parent / "b.npz")


def test_a_trusted_label_stands_whatever_is_suggested_after_it(folder):
    with PredictionLog(folder) as log:
        (id_,) = log.record("v1", "production", mnist_like(1), scores(1))
        log.correct(id_, 4, "alice")
        time.sleep(0.002)
        assert log.correct(id_, 7).source == "suggestion"  # recorded, not taken
    logged = read_log(folder)
    assert (logged.labels.tolist(), logged.sources.tolist()) == ([4], ["trusted"])


def test_repeats_write_nothing_and_a_dismissed_suggestion_stays_dismissed(folder):
    with PredictionLog(folder) as log:
        first, second, third = log.record("v1", "production", mnist_like(3), scores(3))
        alice = log.correct(first, 4, "alice")
        assert log.correct(first, 4, "alice") == alice
        time.sleep(0.002)
        assert log.correct(first, 4, "bob").credential == "bob"  # who taught it changes
        suggested = log.correct(second, 5)
        assert log.correct(second, 5) == suggested
        size = folder_bytes(folder)
        time.sleep(0.002)
        dismissed = log.dismiss(second, 5, "review:carol")
        assert folder_bytes(folder) - size < 300  # no copy of the answer: it leaves the log
        assert log.correct(second, 5) == dismissed  # the same claim again: still dismissed
        log.correct(third, 1)
        time.sleep(0.002)
        log.correct(third, 2)
        time.sleep(0.002)
        log.dismiss(third, 1, "review:carol")  # dismisses 1, which 2 replaced: 2 is pending
    with PredictionLog(folder) as other:  # another writer's index sees the same
        assert other.correct(second, 5) == dismissed
        time.sleep(0.002)
        assert other.correct(second, 6).source == "suggestion"  # another digit: pending
    logged = read_log(folder)
    assert logged.sources.tolist() == ["trusted", "suggestion", "suggestion"]
    assert logged.labels.tolist() == [4, 6, 2]
    assert logged.credentials.tolist() == ["bob", "", ""]


def test_suggestions_have_a_room_of_their_own(folder):
    """Anonymous clients can fill the suggestions' room, never the trusted labels'."""
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000, label_bytes=5_000,
                       suggestion_bytes=5_000)
    with PredictionLog(folder, limits) as log:
        ids = log.record("v1", "production", mnist_like(8), scores(8))
        for id_ in ids[:3]:
            log.correct(id_, 4)
        with pytest.raises(LabelsFull, match="digits feedback review"):
            log.correct(ids[3], 4)
        for id_ in ids[4:7]:
            log.correct(id_, 4, "alice")
        with pytest.raises(LabelsFull, match="digits feedback export --add"):
            log.correct(ids[7], 4, "alice")
        log.dismiss(ids[0], 4, "review:bob")  # a dismissal takes no room: it makes room
    assert release_labels(folder) == 0  # the other suggestions still await review
    assert read_log(folder).sources.tolist() == (
        ["dismissed", "suggestion", "suggestion", ""] + ["trusted"] * 3 + [""])


def test_decided_suggestions_and_exported_labels_leave_the_log(folder):
    """Dismissed and accepted suggestions, and exported labels, are released: otherwise they
    would fill their rooms and /v1/feedback would answer 507 for good."""
    with PredictionLog(folder) as service:
        ids = service.record("v1", "production", mnist_like(3), scores(3))
        service.correct(ids[0], 1)  # to be dismissed
        service.correct(ids[1], 2)  # to be accepted
        service.correct(ids[2], 3, "alice")  # to be exported
    with PredictionLog(folder) as reviewer:
        reviewer.dismiss(ids[0], 1, "review:bob")
        reviewer.correct(ids[1], 2, "review:bob")
    assert release_labels(folder) == 2  # the suggestions, the dismissal with them
    assert [path.name.split("-")[0] for path in sorted(label_files(folder))] == ["labels"] * 2
    logged = read_log(folder)  # released files are segments now, read until they rotate
    assert logged.sources.tolist() == ["dismissed", "trusted", "trusted"]
    assert logged.credentials.tolist() == ["review:bob", "review:bob", "alice"]
    assert release_labels(folder, {ids[1], ids[2]}) == 2  # as `export --add` once stored
    assert label_files(folder) == []


def test_a_dismissal_stays_while_the_suggestion_it_dismissed_does(folder):
    """Released alone, the dismissal would rotate away and the suggestion await review again."""
    with PredictionLog(folder) as service:
        first, second = service.record("v1", "production", mnist_like(2), scores(2))
        service.correct(first, 1)
        service.correct(second, 2)  # the same file: it waits for review
    with PredictionLog(folder) as reviewer:
        reviewer.dismiss(first, 1, "review:bob")
    assert release_labels(folder) == 0
    assert read_log(folder).sources.tolist() == ["dismissed", "suggestion"]
    with PredictionLog(folder) as reviewer:
        reviewer.dismiss(second, 2, "review:bob")
    assert release_labels(folder) == 3
    assert label_files(folder) == []


def test_an_exported_answer_s_earlier_label_is_not_brought_back(folder):
    """Released alone, the latest label would rotate away and the earlier one, in a file kept
    for another answer's sake, would be exported as if it were the latest."""
    limits = LogLimits(segment_bytes=8_000, max_bytes=30_000)
    log = PredictionLog(folder, limits)
    first, second = log.record("v1", "production", mnist_like(2), scores(2))
    log.correct(first, 1, "alice")
    log.correct(second, 3, "alice")
    flood(log, 10)  # a new segment: the writer closes its label file
    log.correct(first, 2, "alice")
    log.close()
    assert release_labels(folder, {first}) == 0  # `second` keeps the first file
    assert read_log(folder).labels.tolist()[:2] == [2, 3]
    assert release_labels(folder, {first, second}) == 2
