"""`digits feedback`: the counts of a prediction log, `--since`, and people's trusted labels
as a feedback batch: read from the log for the checks (`export --add`), which judge it
fairly, or written to a file to look at, which `digits add` refuses as a claim of origin.
Suggestions (labels without a credential) are counted, never exported."""

import time
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from digits.checks.settings import BatchChecks
from digits.data.intake import read_source
from digits.errors import DataError, UsageError
from digits.monitoring.feedback import export_feedback, feedback_source, feedback_summary
from digits.monitoring.log import PredictionLog
from tests.helpers.feedback import (
    LABELLER,
    confusing_model,
    correct_mistakes,
    give_labels,
    log_answers,
    one_hot_answers,
)
from tests.helpers.synth import make_digits, make_prototypes

# --- a log made without a model: answers given, labels from people ---------------------


@pytest.fixture
def log_dir(tmp_path):
    """Twelve answers: 0,1,2,3 three times each. Labels: three 3s corrected to 8, the 0s
    confirmed, one 1 corrected to 7; the 2s unlabelled."""
    images, _ = make_digits(12, 9, make_prototypes())
    answers = np.repeat(np.arange(4), 3)
    folder = tmp_path / "log"
    ids = log_answers(folder, images, one_hot_answers(answers))
    give_labels(folder, ids[9:] + ids[:3] + ids[3:4], [8, 8, 8, 0, 0, 0, 7])
    return folder


def test_summary_counts_corrections_confirmations_and_agreement_per_digit(log_dir):
    summary = feedback_summary(log_dir).as_dict()
    assert (summary["answered"], summary["corrected"], summary["confirmed"]) == (12, 4, 3)
    by_digit = {d["digit"]: d for d in summary["digits"]}
    assert [by_digit[d]["answered"] for d in range(5)] == [3, 3, 3, 3, 0]
    assert [by_digit[d]["labelled"] for d in range(4)] == [3, 1, 0, 3]
    assert [by_digit[d]["agreement"] for d in range(4)] == [1.0, 0.0, None, 0.0]


def test_a_repeated_label_counts_once_and_the_latest_label_counts(log_dir, tmp_path):
    images, _ = make_digits(2, 3, make_prototypes())
    folder = tmp_path / "again"
    ids = log_answers(folder, images, one_hot_answers(np.array([4, 4])))
    give_labels(folder, [ids[0], ids[0], ids[1], ids[1]], [4, 4, 9, 4])
    summary = feedback_summary(folder).as_dict()
    assert (summary["corrected"], summary["confirmed"]) == (0, 2)


def test_since_counts_only_answers_given_from_then_on(tmp_path):
    images, _ = make_digits(5, 3, make_prototypes())
    folder = tmp_path / "log"
    early = log_answers(folder, images[:3], one_hot_answers(np.array([1, 1, 1])))
    time.sleep(0.02)
    cut = datetime.now(UTC)
    time.sleep(0.02)
    late = log_answers(folder, images[3:], one_hot_answers(np.array([2, 2])))
    give_labels(folder, early + late, [1, 1, 7, 2, 2])
    summary = feedback_summary(folder, cut).as_dict()
    assert (summary["answered"], summary["corrected"], summary["confirmed"]) == (2, 0, 2)
    exported = export_feedback(folder, tmp_path / "late.npz", cut)
    assert (exported.corrected, exported.confirmed) == (0, 2)
    assert feedback_source(folder, cut)[0].labels.tolist() == [2, 2]


def test_the_feedback_batch_is_read_from_the_log_with_the_answers_given(log_dir):
    source, ids = feedback_source(log_dir)
    assert (source.origin, source.path) == ("feedback", str(log_dir))
    assert len(ids) == 7  # the labelled answers the batch holds, for the log to release
    # In the log's order: the 0s (confirmed), one 1 corrected to 7, three 3s corrected to 8.
    assert source.labels.tolist() == [0, 0, 0, 7, 8, 8, 8]
    assert source.answers.tolist() == [0, 0, 0, 1, 3, 3, 3]
    assert source.credentials.tolist() == [LABELLER] * 7
    assert source.confirmed_rows().tolist() == [True] * 3 + [False] * 4
    assert source.images.dtype == np.uint8 and source.images.shape == (7, 28, 28)


def test_an_exported_file_is_for_reading_and_digits_add_refuses_it(log_dir, tmp_path):
    exported = export_feedback(log_dir, tmp_path / "batch.npz")
    assert (exported.corrected, exported.confirmed, exported.repeats) == (4, 3, 0)
    with np.load(tmp_path / "batch.npz", allow_pickle=False) as batch:
        assert sorted(batch.files) == ["confirmed", "credentials", "images", "labels", "origin"]
        assert batch["credentials"].tolist() == [LABELLER] * 7
        assert (batch["images"] == feedback_source(log_dir)[0].images).all()
        assert batch["labels"].tolist() == [0, 0, 0, 7, 8, 8, 8]
        assert str(batch["origin"]) == "feedback"
        assert batch["confirmed"].tolist() == [True] * 3 + [False] * 4
    # Its origin is a claim: added as a file it would be judged as one (its corrections
    # quarantined for good, by its id); `export --add` reads the log instead.
    with pytest.raises(DataError, match=r"batch\.npz: holds 'origin': a file cannot say where"):
        read_source(tmp_path / "batch.npz")


def test_export_drops_the_same_image_sent_twice_with_the_same_label(tmp_path):
    image, _ = make_digits(1, 3, make_prototypes())
    folder = tmp_path / "log"
    ids = log_answers(folder, np.repeat(image, 3, axis=0), one_hot_answers(np.array([5] * 3)))
    give_labels(folder, ids, [5, 5, 6])
    exported = export_feedback(folder, tmp_path / "b.npz")
    assert (exported.confirmed, exported.corrected, exported.repeats) == (1, 1, 1)


def test_export_refuses_an_existing_out_unless_forced(log_dir, tmp_path):
    out = tmp_path / "batch.npz"
    out.write_bytes(b"someone's work")
    with pytest.raises(UsageError, match=r"batch\.npz: exists \(--force replaces it\)"):
        export_feedback(log_dir, out)
    assert out.read_bytes() == b"someone's work"
    export_feedback(log_dir, out, force=True)
    with np.load(out) as batch:
        assert len(batch["labels"]) == 7
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("name", ["batch.npy", "batch", "batch.npz.tmp"])
def test_export_needs_an_npz_name(log_dir, tmp_path, name):
    with pytest.raises(UsageError, match="must end in .npz"):
        export_feedback(log_dir, tmp_path / name)


def test_an_export_with_no_labels_is_a_data_error_and_writes_nothing(tmp_path):
    images, _ = make_digits(3, 3, make_prototypes())
    log_answers(tmp_path / "log", images, one_hot_answers(np.array([1, 2, 3])))
    with pytest.raises(DataError, match=r"no trusted corrections or confirmations \(3 "
                                        r"answered, 0 suggestions awaiting `digits feedback "
                                        r"review`\); nothing written"):
        export_feedback(tmp_path / "log", tmp_path / "b.npz")
    assert not (tmp_path / "b.npz").exists()


def test_a_missing_log_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        feedback_summary(tmp_path / "none")
    with pytest.raises(DataError, match="does not exist"):
        export_feedback(tmp_path / "none", tmp_path / "b.npz")


# --- only trusted labels are exported (issue 28) --------------------------------------------


def suggest_and_dismiss(folder) -> list[str]:
    """Four more answers on the log at `folder`, each answered 5 and suggested 6 without a
    credential (the page, anonymous clients): two left pending, one dismissed, one that a
    reviewer relabels 5; their ids."""
    images, _ = make_digits(4, 19, make_prototypes())
    ids = log_answers(folder, images, one_hot_answers(np.array([5, 5, 5, 5])))
    give_labels(folder, ids, [6, 6, 6, 6], credential=None)
    with PredictionLog(folder) as reviewer:
        reviewer.dismiss(ids[2], 6, "review:bob")
        reviewer.correct(ids[3], 5, "review:bob")
    return ids


def test_suggestions_are_counted_and_never_exported(log_dir, tmp_path):
    suggest_and_dismiss(log_dir)
    summary = feedback_summary(log_dir).as_dict()
    assert (summary["answered"], summary["corrected"], summary["confirmed"]) == (16, 4, 4)
    assert summary["suggestions"] == {"pending": 2, "dismissed": 1}
    source, ids = feedback_source(log_dir)
    assert len(source.labels) == len(ids) == 8  # the 7 given with a token, 1 reviewed
    assert source.labels.tolist() == [0, 0, 0, 7, 8, 8, 8, 5]  # no 6: none was trusted
    assert source.credentials.tolist() == [LABELLER] * 7 + ["review:bob"]
    exported = export_feedback(log_dir, tmp_path / "b.npz")
    assert (exported.corrected, exported.confirmed) == (4, 4)


def test_a_log_of_suggestions_only_exports_nothing(tmp_path):
    """Repro 1 of issue 28, small: an anonymous client's labels, all wrong, are no batch."""
    images, _ = make_digits(3, 3, make_prototypes())
    folder = tmp_path / "log"
    ids = log_answers(folder, images, one_hot_answers(np.array([1, 2, 3])))
    give_labels(folder, ids, [2, 3, 4], credential=None)
    message = (r"no trusted corrections or confirmations \(3 answered, 3 suggestions awaiting "
               r"`digits feedback review`\)")
    with pytest.raises(DataError, match=message):
        feedback_source(folder)
    with pytest.raises(DataError, match=message):
        export_feedback(folder, tmp_path / "b.npz")


# --- answers flagged "not a digit" (issue 30) --------------------------------------------


@pytest.fixture
def flagged_log(tmp_path):
    """Seven answers, each 8 at 40%, all but the first flagged not a digit by the version's
    rule. Labels: the first confirmed with a token; of the flagged ones, one unlabelled, one
    suggested 3 (pending), one suggested 3 and dismissed, one corrected to 3 and one
    confirmed as 8 with a token, one suggested 3 and accepted by a reviewer."""
    images, _ = make_digits(7, 23, make_prototypes())
    folder = tmp_path / "log"
    flags = np.array([False] + [True] * 6)
    ids = log_answers(folder, images, one_hot_answers(np.full(7, 8), 0.4), not_a_digit=flags)
    give_labels(folder, [ids[0], ids[4], ids[5]], [8, 3, 8])
    give_labels(folder, [ids[2], ids[3], ids[6]], [3, 3, 3], credential=None)
    with PredictionLog(folder) as reviewer:
        reviewer.dismiss(ids[3], 3, "review:bob")
        reviewer.correct(ids[6], 3, "review:bob")
    return folder, ids, images


def test_flagged_answers_are_counted_apart_from_the_digits_answered(flagged_log):
    summary = feedback_summary(flagged_log[0]).as_dict()
    assert (summary["answered"], summary["corrected"], summary["confirmed"]) == (7, 2, 2)
    assert summary["not_a_digit"] == {"answered": 6, "labelled": 3}
    assert summary["suggestions"] == {"pending": 1, "dismissed": 1}
    eight = summary["digits"][8]  # only the answer given as an 8
    assert (eight["answered"], eight["labelled"], eight["agreement"]) == (1, 1, 1.0)


def test_flagged_answers_are_exported_only_with_a_person_s_label(flagged_log, tmp_path):
    """No path exports a label a person did not give (the model's closest digit, a
    suggestion nobody reviewed): a flagged answer leaves the log as a labelled digit only
    with a trusted label (a token's, or a reviewer's acceptance), and then with that label."""
    folder, ids, images = flagged_log
    source, exported_ids = feedback_source(folder)
    assert sorted(exported_ids) == sorted([ids[0], ids[4], ids[5], ids[6]])
    assert source.labels.tolist() == [8, 3, 8, 3]
    assert (source.images == images[[0, 4, 5, 6]]).all()
    assert source.credentials.tolist() == [LABELLER] * 3 + ["review:bob"]
    exported = export_feedback(folder, tmp_path / "b.npz")
    assert (exported.corrected, exported.confirmed) == (2, 2)
    with np.load(tmp_path / "b.npz") as batch:
        assert (batch["images"] == images[[0, 4, 5, 6]]).all()


def test_feedback_prints_how_many_answers_were_not_a_digit(cli, flagged_log):
    code, out, err = cli("feedback", "--log-dir", flagged_log[0])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "answered 7 (6 not a digit), corrected 2, confirmed 2"
    assert lines[11].split() == ["8", "1", "1", "1.00"]  # after the header, digits 0-9
    assert lines[13].split() == ["not", "a", "digit", "6", "3", "-"]


# --- the command line -------------------------------------------------------------------


def test_feedback_prints_the_counts_and_a_table_per_digit(cli, log_dir):
    code, out, err = cli("feedback", "--log-dir", log_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "answered 12 (0 not a digit), corrected 4, confirmed 3"
    assert lines[1] == "trusted labels 7, suggestions pending review 0, dismissed 0"
    assert lines[2].split() == ["digit", "answered", "labelled", "agreement"]
    assert lines[3].split() == ["0", "3", "3", "1.00"]
    assert lines[5].split() == ["2", "3", "0", "-"]


def test_feedback_json_and_the_log_dir_from_the_environment(cli, log_dir, monkeypatch):
    import json

    monkeypatch.setenv("DIGITS_LOG_DIR", str(log_dir))
    code, out, err = cli("feedback", "--json", "--since", "1h")
    assert code == 0, err
    assert json.loads(out)["corrected"] == 4
    code, out, err = cli("feedback", "--since", "2999-01-01")
    assert code == 0 and out.startswith(
        "answered 0 (0 not a digit), corrected 0, confirmed 0 since 2999")


def test_feedback_export_writes_the_batch(cli, log_dir, tmp_path):
    out = tmp_path / "batch.npz"
    code, stdout, err = cli("feedback", "export", "--log-dir", log_dir, "--out", out)
    assert code == 0, err
    assert stdout == f"wrote {out}: 7 images (4 corrected, 3 confirmed)\n"
    with np.load(out) as batch:
        assert len(batch["labels"]) == 7
    # The log folder given to `feedback` itself serves its subcommand too.
    code, _, err = cli("feedback", "--log-dir", log_dir, "export", "--out", out, "--force")
    assert code == 0, err


@pytest.mark.parametrize("args, code, message", [
    (["feedback"], 2, "no prediction log: pass --log-dir DIR or set DIGITS_LOG_DIR"),
    (["feedback", "--log-dir", "{tmp}/none"], 4, "none does not exist"),
    (["feedback", "--log-dir", "{tmp}", "--since", "soon"], 2, "--since 'soon'"),
    (["feedback", "--log-dir", "{tmp}"], 4, "is not a prediction log"),
    (["feedback", "export", "--log-dir", "{log}", "--out", "{tmp}/taken.npz"], 2, "exists"),
    (["feedback", "export", "--log-dir", "{log}", "--out", "{tmp}/x.npz", "--since", "2999-01-01"],
     4, "no trusted corrections or confirmations since 2999-01-01T00:00:00Z"),
    (["feedback", "export", "--log-dir", "{log}"], 2,
     "feedback export: give --out FILE.npz (to read) or --add (into the batch store)"),
    (["feedback", "export", "--log-dir", "{log}", "--out", "{tmp}/x.npz", "--add"], 2,
     "feedback export: --out or --add, not both (the batch added is read from the log)"),
])
def test_feedback_errors_are_one_line_with_the_documented_code(
        cli, log_dir, tmp_path, monkeypatch, args, code, message):
    monkeypatch.delenv("DIGITS_LOG_DIR", raising=False)
    (tmp_path / "taken.npz").write_bytes(b"x")
    args = [a.format(tmp=tmp_path, log=log_dir) for a in args]
    got, _, err = cli(*args)
    assert got == code, err
    assert message in err and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


# --- a correction batch, judged by the checks --------------------------------------------


@pytest.mark.slow  # trains a small Keras model
def test_an_exported_correction_batch_is_accepted_where_file_rules_quarantine_it(tmp_path):
    from digits.checks.batch import check_batch, report_of
    from digits.checks.measure import reference_of

    config = BatchChecks()
    prototypes = make_prototypes()
    train_x, train_y = make_digits(1200, 1, prototypes)
    test_x, _ = make_digits(300, 2, prototypes)
    model = confusing_model(train_x, train_y)
    reference = reference_of(train_x, train_y, test_x, [], config)
    served, truth = make_digits(400, 5, prototypes)
    probabilities = model.predict(served, verbose=0)
    ids = log_answers(tmp_path / "log", served, probabilities)
    wrong, right = correct_mistakes(tmp_path / "log", ids, probabilities.argmax(axis=1),
                                    truth.astype(np.int64), confirmations=12)
    assert len(wrong) >= 40 and set(truth[wrong]) <= {3, 8}  # mistakes on confusable digits
    assert len(right) == 12

    source, _ = feedback_source(tmp_path / "log")
    checks = check_batch(source, reference, model, config, tmp_path / "work")
    report = report_of(checks)
    assert report["status"] == "accepted", report["reason"]
    by_name = {check.name: check for check in checks}
    assert by_name["label-agreement"].observed == 1.0  # on the 12 confirmed rows
    assert by_name["class-shares"].observed > config.max_class_shift  # reported only
    assert by_name["correction-plausibility"].observed >= config.min_correction_plausibility

    # The same images and labels as a plain file: production disagrees with the
    # corrections, and they cluster on two digits.
    as_file = replace(source, origin="file", answers=None)
    failed = {check.name for check in check_batch(as_file, reference, model, config,
                                                  tmp_path / "work") if not check.passed}
    assert {"label-agreement", "class-shares"} <= failed
