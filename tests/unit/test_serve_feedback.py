"""The service's prediction log and corrections (`digits serve --log-dir`, POST /v1/feedback)
in-process, with FastAPI's TestClient, on a tiny real Keras model in a temporary registry."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digits.data.images import load_inputs
from digits.errors import DataError
from digits.monitoring.feedback import export_feedback, feedback_source
from digits.monitoring.log import LogLimits
from digits.monitoring.reader import read_log
from digits.monitoring.records import log_files, segment_files
from digits.monitoring.tokens import add_token, revoke_token
from digits.registry.store import Registry
from digits.serving.app import create_app, read_assets
from tests.helpers.processes import REPO
from tests.helpers.serving import (
    LOCAL_URL,
    digit_png,
    mnist_like,
    publish_model,
    save_tiny_model,
    serving,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "a.keras", seed=1)


@pytest.fixture
def registry(tmp_path, model) -> Registry:
    registry = Registry(tmp_path / "registry")
    publish_model(registry, model)
    return registry


@pytest.fixture
def logs(tmp_path) -> Path:
    return tmp_path / "predictions"


@pytest.fixture
def client(registry, logs):
    with serving(registry, log_dir=logs) as client:
        yield client


def predict(client: TestClient, images: np.ndarray) -> dict:
    answer = client.post("/v1/predict", json={"instances": images.tolist()})
    assert answer.status_code == 200, answer.text
    return answer


def log_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(log_files(folder)))


# --- logging every answer ----------------------------------------------------------------


def test_each_image_answered_is_logged_with_the_id_the_answer_carries(client, logs):
    images = mnist_like(3)
    answer = predict(client, images)
    predictions = answer.json()["predictions"]
    ids = [prediction["id"] for prediction in predictions]
    assert len(set(ids)) == 3
    assert answer.headers["X-Request-ID"] == ids[0]  # the first image's id

    logged = read_log(logs)
    assert logged.ids.tolist() == ids
    assert logged.versions.tolist() == ["v1"] * 3 and logged.refs.tolist() == ["production"] * 3
    assert logged.digits.tolist() == [prediction["digit"] for prediction in predictions]
    np.testing.assert_allclose(logged.probabilities,
                               [prediction["probabilities"] for prediction in predictions])
    np.testing.assert_array_equal(logged.images, images)
    assert client.get("/readyz").json()["log"] is True


def test_an_upload_is_logged_normalised_and_its_bytes_are_not_kept(client, logs, tmp_path):
    png = digit_png()
    answer = client.post("/v1/predict", files={"file": ("seven.png", png, "image/png")})
    assert answer.status_code == 200, answer.text
    logged = read_log(logs)
    assert logged.ids.tolist() == [answer.json()["predictions"][0]["id"]]
    upload = tmp_path / "seven.png"
    upload.write_bytes(png)
    np.testing.assert_array_equal(logged.images[0], np.rint(load_inputs([upload])[1][0]))
    stored = log_bytes(logs)
    assert png[8:40] not in stored and base64.b64encode(png)[:40] not in stored


def test_the_other_protocols_log_their_answers_too(client, logs):
    tensor = {"name": "images", "shape": [2, 28, 28], "datatype": "UINT8",
              "data": mnist_like(2).ravel().tolist()}
    infer = client.post("/v2/models/digits/infer", json={"inputs": [tensor]})
    invocations = client.post("/invocations", json={"inputs": mnist_like(1, seed=3).tolist()})
    assert infer.status_code == 200 and invocations.status_code == 200
    logged = read_log(logs)
    assert len(logged) == 3
    assert infer.headers["X-Request-ID"] == logged.ids[0]
    assert invocations.headers["X-Request-ID"] == logged.ids[2]
    np.testing.assert_array_equal(logged.images[2], mnist_like(1, seed=3)[0])


def test_without_a_log_answers_carry_no_id_and_feedback_says_why(registry, tmp_path):
    with serving(registry) as client:
        answer = predict(client, mnist_like(1))
        assert "id" not in answer.json()["predictions"][0]
        assert "X-Request-ID" not in answer.headers
        assert client.get("/readyz").json()["log"] is False
        refused = client.post("/v1/feedback", json={"id": "0" * 32, "label": 3})
    assert refused.status_code == 409
    assert "--log-dir" in refused.json()["error"]
    assert list(tmp_path.iterdir()) == [registry.root]  # nothing written anywhere


def test_a_log_that_cannot_be_written_costs_the_ids_not_the_answer(client, logs):
    (earlier,) = predict(client, mnist_like(1)).json()["predictions"]
    shutil.rmtree(logs)  # the folder removed under the service: no segment can be made
    answer = predict(client, mnist_like(2))
    assert len(answer.json()["predictions"]) == 2
    assert all("id" not in prediction for prediction in answer.json()["predictions"])
    assert "X-Request-ID" not in answer.headers
    refused = client.post("/v1/feedback", json={"id": earlier["id"], "label": 1})
    assert refused.status_code == 503 and "cannot be written" in refused.json()["error"]
    assert str(logs) not in refused.text


def test_a_folder_of_other_files_is_refused_as_a_log(registry, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a prediction log"):
        create_app(registry, log_dir=other)
    # The command says so in one line with the data exit code, before it listens.
    served = subprocess.run(
        [sys.executable, "-m", "digits", "serve", "--registry", str(registry.root),
         "--log-dir", str(other), "--port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert served.returncode == 4, served.stderr
    assert served.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a prediction log" in served.stderr


# --- corrections ----------------------------------------------------------------------


def test_a_correction_is_recorded_and_a_repeat_writes_nothing(client, logs):
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    label = (prediction["digit"] + 1) % 10
    sent = client.post("/v1/feedback", json={"id": prediction["id"], "label": label})
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["id"] == prediction["id"] and body["label"] == label
    assert body["digit"] == prediction["digit"] and body["confirmed"] is False
    assert read_log(logs).labels.tolist() == [label]

    size = len(log_bytes(logs))
    again = client.post("/v1/feedback", json={"id": prediction["id"], "label": label})
    assert again.status_code == 200 and again.json() == body  # the same correction, its time too
    assert len(log_bytes(logs)) == size

    confirmed = client.post("/v1/feedback",
                            json={"id": prediction["id"], "label": prediction["digit"]})
    assert confirmed.status_code == 200 and confirmed.json()["confirmed"] is True
    assert read_log(logs).labels.tolist() == [prediction["digit"]]  # the latest counts


def test_an_unknown_id_is_a_404(client, logs):
    predict(client, mnist_like(1))
    for id_ in ("0" * 32, "no-such-id", "x" * 4000):
        answer = client.post("/v1/feedback", json={"id": id_, "label": 3})
        assert answer.status_code == 404, answer.text
        assert "no logged prediction" in answer.json()["error"]
        assert len(answer.text) < 200  # the id is echoed short, not whole
    assert read_log(logs).labels.tolist() == [-1]


@pytest.mark.parametrize("body", [
    {"label": 10}, {"label": -1}, {"label": "3"}, {"label": True}, {"label": 3.0},
    {"label": None}, {"label": [3]},
])
def test_a_bad_label_is_a_422(client, logs, body):
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    answer = client.post("/v1/feedback", json={"id": prediction["id"], **body})
    assert answer.status_code == 422, answer.text
    assert '"label" must be an integer 0..9' in answer.json()["error"]
    assert read_log(logs).labels.tolist() == [-1]


@pytest.mark.parametrize("body, status, message", [
    ([1, 2], 422, "must be an object"),
    ({"label": 3}, 422, '"id" is missing'),
    ({"id": "a"}, 422, '"label" is missing'),
    ({"id": 7, "label": 3}, 422, '"id" must be a string'),
    ({"id": "a", "label": 3, "digit": 3}, 422, "unknown field(s) ['digit']"),
])
def test_a_bad_body_is_refused_naming_the_problem(client, body, status, message):
    answer = client.post("/v1/feedback", json=body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_a_feedback_body_is_small_or_refused_unparsed(client):
    """An id and a label take ~60 bytes: a bigger body is refused before it is parsed."""
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    body = {"id": prediction["id"], "label": 3}
    padded = json.dumps(body).encode()[:-1] + b" " * 5000 + b"}"
    answer = client.post("/v1/feedback", content=padded,
                         headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "4096 bytes" in answer.json()["error"]
    assert client.post("/v1/feedback", json=body).status_code == 200


def test_a_flood_of_answers_leaves_a_labelled_one_to_feedback_and_export(
        registry, logs, tmp_path):
    """The issue's repro, small: answers enough to rotate the log many times over came after
    a correction; the correction's answer still takes feedback and is exported."""
    limits = LogLimits(segment_bytes=20_000, max_bytes=60_000)
    with serving(registry, log_dir=logs, log_limits=limits) as client:
        trusted = bearer(add_token(logs, "alice"))
        early, labelled = predict(client, mnist_like(2)).json()["predictions"]
        assert client.post("/v1/feedback", json={"id": labelled["id"], "label": 4},
                           headers=trusted).status_code == 200
        for _ in range(20):  # 200 blank answers, ~280 KB of log
            predict(client, np.zeros((10, 28, 28), np.uint8))
        assert early["id"] not in read_log(logs).ids.tolist()  # the log did rotate
        again = client.post("/v1/feedback", json={"id": labelled["id"], "label": 5},
                            headers=trusted)
        assert again.status_code == 200, again.text
    exported = export_feedback(logs, tmp_path / "batch.npz")
    assert exported.corrected + exported.confirmed == 1


def test_labels_awaiting_export_or_review_past_their_bound_are_a_507(registry, logs):
    limits = LogLimits(label_bytes=2_000, suggestion_bytes=2_000)  # room for one label each
    with serving(registry, log_dir=logs, log_limits=limits) as client:
        trusted = bearer(add_token(logs, "alice"))
        first, second = predict(client, mnist_like(2)).json()["predictions"]
        for headers, next_step in (({}, "digits feedback review"),
                                   (trusted, "digits feedback export --add")):
            sent = client.post("/v1/feedback", json={"id": first["id"], "label": 1},
                               headers=headers)
            assert sent.status_code == 200, sent.text
            full = client.post("/v1/feedback", json={"id": second["id"], "label": 1},
                               headers=headers)
            assert full.status_code == 507, full.text
            assert next_step in full.json()["error"]
            assert str(logs) not in full.text


def test_feedback_must_be_json(client):
    malformed = client.post("/v1/feedback", content=b"{nope",
                            headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]
    form = client.post("/v1/feedback", data={"id": "a", "label": "3"})
    assert form.status_code == 415


@pytest.mark.parametrize("headers, status", [
    ({"origin": "http://evil.example"}, 403),
    ({"sec-fetch-site": "cross-site"}, 403),
    ({"origin": LOCAL_URL, "sec-fetch-site": "same-origin"}, 200),  # the page's own fetch
    ({}, 200),  # curl, a script
])
def test_feedback_is_guarded_like_predict(client, logs, headers, status):
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    answer = client.post("/v1/feedback", json={"id": prediction["id"], "label": 3},
                         headers=headers)
    assert answer.status_code == status, answer.text
    assert read_log(logs).labels.tolist() == ([3] if status == 200 else [-1])


def test_a_worker_takes_corrections_for_another_workers_answers(registry, logs):
    # Two apps on one folder, as uvicorn workers are: each writes its own segment.
    with serving(registry, log_dir=logs) as first, serving(registry, log_dir=logs) as second:
        answered = predict(first, mnist_like(2)).json()["predictions"]
        for prediction in answered:
            sent = second.post("/v1/feedback", json={"id": prediction["id"], "label": 8})
            assert sent.status_code == 200, sent.text
        predict(second, mnist_like(1, seed=5))
    logged = read_log(logs)
    assert len(segment_files(logs)) == 2
    assert logged.labels.tolist() == [8, 8, -1]


# --- who may teach the model: trusted labels and suggestions (issue 28) -----------------


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_label_sent_with_an_operators_token_is_trusted_under_its_name(client, logs):
    token = add_token(logs, "alice")
    add_token(logs, "bob")  # several tokens at once
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    label = (prediction["digit"] + 1) % 10
    sent = client.post("/v1/feedback", json={"id": prediction["id"], "label": label},
                       headers=bearer(token))
    assert sent.status_code == 200, sent.text
    assert (sent.json()["source"], sent.json()["credential"]) == ("trusted", "alice")
    logged = read_log(logs)
    assert (logged.sources.tolist(), logged.credentials.tolist()) == (["trusted"], ["alice"])
    assert token.encode() not in log_bytes(logs) + (logs / "tokens.json").read_bytes()
    source, _ = feedback_source(logs)  # what `digits feedback export --add` takes
    assert (source.labels.tolist(), source.credentials.tolist()) == ([label], ["alice"])


def test_a_label_sent_without_a_token_is_a_suggestion_that_trains_nothing(client, logs):
    """Repro 1 of issue 28, small: an anonymous client's labels reach no batch."""
    add_token(logs, "alice")
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    label = (prediction["digit"] + 1) % 10
    sent = client.post("/v1/feedback", json={"id": prediction["id"], "label": label})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["source"], sent.json()["credential"]) == ("suggestion", None)
    assert read_log(logs).sources.tolist() == ["suggestion"]
    with pytest.raises(DataError, match="no trusted corrections or confirmations"):
        feedback_source(logs)


@pytest.mark.parametrize("authorization, challenge", [
    ("Bearer " + "A" * 43, 'Bearer error="invalid_token"'),  # no such token
    ("bearer " + "A" * 43, 'Bearer error="invalid_token"'),  # the scheme in any case
    ("Basic YWxpY2U6c2VjcmV0", "Bearer"),  # not a bearer token
    ("Bearer ", "Bearer"),  # no token
    ("", "Bearer"),
])
def test_a_credential_that_is_not_valid_is_a_401_never_a_suggestion(
        client, logs, authorization, challenge):
    add_token(logs, "alice")
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    refused = client.post("/v1/feedback", json={"id": prediction["id"], "label": 3},
                          headers={"Authorization": authorization})
    assert refused.status_code == 401, refused.text
    assert refused.headers["WWW-Authenticate"] == challenge
    assert "token" in refused.json()["error"] and "A" * 43 not in refused.text
    assert read_log(logs).labels.tolist() == [-1]


def test_a_revoked_token_is_refused_from_the_next_request_without_a_restart(client, logs):
    token = add_token(logs, "alice")
    first, second = predict(client, mnist_like(2)).json()["predictions"]
    sent = client.post("/v1/feedback", json={"id": first["id"], "label": 1},
                       headers=bearer(token))
    assert sent.status_code == 200, sent.text
    revoke_token(logs, "alice")
    refused = client.post("/v1/feedback", json={"id": second["id"], "label": 1},
                          headers=bearer(token))
    assert refused.status_code == 401, refused.text
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    carol = add_token(logs, "carol")  # a token made while the service runs counts at once
    assert client.post("/v1/feedback", json={"id": second["id"], "label": 1},
                       headers=bearer(carol)).status_code == 200
    assert read_log(logs).credentials.tolist() == ["alice", "carol"]


def test_a_tokens_file_that_does_not_read_refuses_every_token_and_no_suggestion(client, logs):
    token = add_token(logs, "alice")
    (logs / "tokens.json").write_text("{broken")
    (prediction,) = predict(client, mnist_like(1)).json()["predictions"]
    refused = client.post("/v1/feedback", json={"id": prediction["id"], "label": 1},
                          headers=bearer(token))
    assert refused.status_code == 503 and "tokens" in refused.json()["error"]
    assert str(logs) not in refused.text
    assert client.post("/v1/feedback",
                       json={"id": prediction["id"], "label": 1}).status_code == 200


# --- the page ------------------------------------------------------------------------


def test_the_page_offers_ten_labelled_correction_buttons():
    assets = read_assets()
    page, script = assets["index.html"].decode(), assets["app.js"].decode()
    assert 'id="feedback-status"' in page and 'id="feedback"' in page
    # The buttons are made by the script, one per digit, each with a label and a stable id.
    assert "`feedback-${digit}`" in script and "aria-label" in script
    assert '"/v1/feedback"' in script
    assert "Thanks: suggested" in script and "Authorization" not in script  # no token
