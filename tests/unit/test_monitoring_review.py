"""`digits feedback review`: a person turns suggestions (labels sent without a credential)
into trusted labels or dismisses them, in the terminal, each image shown as text art."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from typer.testing import CliRunner

from digits.cli import app
from digits.monitoring.feedback import feedback_source
from digits.monitoring.reader import read_log
from digits.monitoring.records import label_files
from digits.monitoring.review import image_art, pending_suggestions
from tests.helpers.feedback import give_labels, log_answers, one_hot_answers
from tests.helpers.synth import make_digits, make_prototypes


@pytest.fixture
def log_dir(tmp_path):
    """Five answers (0..4), each suggested one more than the answer, without a credential."""
    images, _ = make_digits(5, 3, make_prototypes())
    folder = tmp_path / "log"
    ids = log_answers(folder, images, one_hot_answers(np.arange(5)))
    give_labels(folder, ids, [1, 2, 3, 4, 5], credential=None)
    return folder


def review(log_dir, keys: str, *args: str):
    return CliRunner().invoke(app, ["feedback", "review", "--log-dir", str(log_dir), *args],
                              input="".join(f"{key}\n" for key in keys), env={"USER": "ann"})


def test_each_suggestion_is_shown_with_its_image_the_answer_and_the_suggestion(log_dir):
    result = review(log_dir, "q")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "suggestion 1 of 5: answer " in out and "suggestion 2 of 5" not in out
    assert "the model answered 0 (90%); suggested: 1 (the model gave it 1%)" in out
    assert "accept (y), reject (n), another digit (0-9), skip (s), quit (q)" in out
    assert "█" in out and "┌" + "─" * 56 + "┐" in out  # the image, in a frame
    assert "reviewed 0 of 5 suggestions as review:ann" in out
    assert read_log(log_dir).sources.tolist() == ["suggestion"] * 5  # nothing decided


def test_an_answer_the_version_flagged_is_shown_as_not_a_digit(tmp_path):
    images, _ = make_digits(2, 3, make_prototypes())
    folder = tmp_path / "log"
    ids = log_answers(folder, images, one_hot_answers(np.array([8, 4]), 0.4),
                      not_a_digit=np.array([True, False]))
    give_labels(folder, ids, [3, 9], credential=None)
    assert [s.not_a_digit for s in pending_suggestions(folder)] == [True, False]
    out = review(folder, "ss").output
    assert ("the model answered not a digit (closest: 8, 40%); suggested: 3 (the model gave "
            "it 7%)") in out
    assert "the model answered 4 (40%); suggested: 9 (the model gave it 7%)" in out


def test_accepted_and_relabelled_suggestions_become_trusted_labels_of_the_reviewer(log_dir):
    result = review(log_dir, "yn7sq", "--reviewer", "bob")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (
        "reviewed 4 of 5 suggestions as review:bob: accepted 1, relabelled 1, rejected 1, "
        "skipped 1; 2 still pending")
    logged = read_log(log_dir)
    assert logged.sources.tolist() == ["trusted", "dismissed", "trusted", "suggestion",
                                       "suggestion"]
    assert logged.labels.tolist() == [1, 2, 7, 4, 5]
    assert logged.credentials.tolist()[:3] == ["review:bob"] * 3
    source, _ = feedback_source(log_dir)  # what `export --add` takes
    assert source.labels.tolist() == [1, 7]
    assert source.credentials.tolist() == ["review:bob"] * 2
    # A second sitting shows only what still waits.
    again = review(log_dir, "nn")
    assert again.exit_code == 0, again.output
    assert "suggestion 1 of 2" in again.output and "the model answered 3 " in again.output


def test_a_wrong_key_is_asked_again(log_dir):
    result = review(log_dir, ["x", "Y", "q"])
    assert result.exit_code == 0, result.output
    assert "'x' is not one of y, n, 0-9, s, q" in result.output
    assert read_log(log_dir).sources.tolist()[0] == "trusted"


def test_decided_suggestions_leave_the_log_so_their_room_empties(log_dir):
    """Otherwise they fill LogLimits.suggestion_bytes and /v1/feedback answers 507 for good."""
    assert len(label_files(log_dir)) == 1
    result = review(log_dir, "nnnn4")
    assert result.exit_code == 0, result.output
    # The suggestions' file is released; the reviewer's trusted label waits for an export.
    assert [path.name.split("-")[0] for path in label_files(log_dir)] == ["labels"]


def test_nothing_to_review(tmp_path):
    images, _ = make_digits(1, 3, make_prototypes())
    log_answers(tmp_path / "log", images, one_hot_answers(np.array([1])))
    result = review(tmp_path / "log", "")
    assert (result.exit_code, result.output) == (0, "no suggestions await review\n")


@pytest.mark.parametrize("args, message", [
    ([], "who reviews? pass --reviewer NAME (or set USER)"),
    (["--reviewer", "a:b"], "token name 'a:b'"),
])
def test_a_reviewer_has_a_name(cli, log_dir, monkeypatch, args, message):
    monkeypatch.delenv("USER", raising=False)
    code, _, err = cli("feedback", "review", "--log-dir", log_dir, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert read_log(log_dir).sources.tolist() == ["suggestion"] * 5


def test_pending_suggestions_since_a_time(log_dir):
    assert [s.label for s in pending_suggestions(log_dir)] == [1, 2, 3, 4, 5]
    assert pending_suggestions(log_dir, datetime(2999, 1, 1, tzinfo=UTC)) == []


def test_an_image_is_text_in_a_frame_two_characters_a_pixel():
    image = np.zeros((28, 28), np.uint8)
    image[0, 0], image[0, 1], image[27, 27] = 255, 128, 200
    art = image_art(image)
    assert len(art) == 30 and {len(line) for line in art} == {58}
    assert art[0] == "┌" + "─" * 56 + "┐" and art[29] == "└" + "─" * 56 + "┘"
    assert art[1].startswith("│██▒▒  ") and art[28].endswith("  ▓▓│")
