"""The production loop end to end on small generated data, every step through the real CLI
and a real `digits serve --log-dir`: serve -> log -> correct -> export --add -> retrain ->
promote -> the service follows its alias and answers the corrected digits right.

Production (v1) learns ten generated digits; people then send three of them drawn another
way, which it often gets wrong, correct those answers and confirm the rest, with a token the
operator made (`digits feedback tokens add`); an anonymous client's label is a suggestion,
which no batch takes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from digits.data.batches import accepted_batches
from digits.monitoring.reader import read_log
from tests.helpers.processes import BIN, REPO, answers, background, free_port, wait_for
from tests.helpers.synth import make_digits, make_prototypes, write_dataset

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 120  # imports TensorFlow to load the first model: slow on a busy machine
FOLLOW_SECONDS = 5.0  # the service's promise after a promotion
RETRAIN = ["--model", "mlp", "--epochs", "5", "--min-train-rows", "1000"]
NEW_STYLE = (3, 5, 8)  # the digits people draw differently from the training data


def served_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as the training data draws them, except NEW_STYLE's: drawn another way with a
    trace of the usual strokes, so production misses about half of them and mostly still
    ranks the right digit among its first three (as with real writers: a made-up alphabet
    would fail the batch's correction-plausibility check, as it should)."""
    usual, labels = make_digits(n, seed, make_prototypes(0))
    rng = np.random.default_rng(seed)
    trace = make_prototypes(0)[labels] & (rng.random(usual.shape) < 0.15)
    other = make_prototypes(1)[labels] & (rng.random(usual.shape) > 0.15)
    redrawn = ((trace | other) * 220).astype(np.uint8)
    return np.where(np.isin(labels, NEW_STYLE)[:, None, None], redrawn, usual), labels


class Loop:
    """The CLI and the service of one loop, on folders under `root`."""

    def __init__(self, root: Path, server) -> None:
        self.root = root
        self.registry, self.logs = root / "registry", root / "predictions"
        self.mnist = write_dataset(root / "mnist")
        # The module's Prefect server for every command's flow run: one API, not one per
        # command (the embedded default is tests/integration/test_installed_package.py's).
        self.env = {**server.env, "TF_CPP_MIN_LOG_LEVEL": "3", "DIGITS_DATA": str(root / "store"),
                    "DIGITS_ARTIFACTS": str(root / "artifacts")}
        self.url = ""

    def digits(self, *args: str | Path, code: int = 0) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / "digits"), *map(str, args)], cwd=REPO, env=self.env,
                                capture_output=True, text=True, timeout=900, check=False)
        assert result.returncode == code, f"digits {args[0]}: {result.stdout}\n{result.stderr}"
        return result

    def retrain(self) -> str:
        return self.digits("run", *RETRAIN, "--data-dir", self.mnist, "--registry",
                           self.registry).stdout

    def predict(self, images: np.ndarray) -> list[dict]:
        body = {"instances": images.astype(int).tolist()}
        answer = httpx.post(f"{self.url}/v1/predict", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    def served_version(self) -> str:
        answer = httpx.post(f"{self.url}/v1/predict", json={"instances": [[[0] * 28] * 28]},
                            timeout=10)
        return answer.json()["model"]["version"]

    def correct(self, id: str, label: int, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.post(f"{self.url}/v1/feedback", json={"id": id, "label": label},
                            headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()


def test_corrected_answers_become_training_data_and_the_followed_alias_answers_them_right(
        tmp_path, server):
    loop = Loop(tmp_path, server)
    assert "promoted v1" in loop.retrain()
    port = free_port()
    loop.url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "digits"), "serve", "--port", str(port), "--registry",
               str(loop.registry), "--log-dir", str(loop.logs)]
    with background(command, loop.env, tmp_path / "serve.log") as process:
        ready = f"{loop.url}/readyz"
        wait_for(lambda: answers(ready, process, tmp_path / "serve.log"), STARTUP_SECONDS,
                 ready, every=0.5, log=tmp_path / "serve.log")

        # 1. The service answers and logs every image, with the version that answered.
        images, labels = served_digits(200, seed=40)
        answered = loop.predict(images)
        given = np.array([p["digit"] for p in answered])
        logged = read_log(loop.logs)
        assert list(logged.ids) == [p["id"] for p in answered]
        assert set(logged.versions) == {"v1"} and (logged.digits == given).all()
        wrong = given != labels
        assert wrong[np.isin(labels, NEW_STYLE)].mean() > 0.3, "v1 should miss the new style"
        assert wrong[~np.isin(labels, NEW_STYLE)].mean() < 0.1

        # 2. People correct the wrong answers and confirm the right ones, with the token the
        #    operator gave them; a repeat is harmless. Without one, a label is a suggestion.
        token = loop.digits("feedback", "tokens", "add", "labellers", "--log-dir",
                            loop.logs).stdout.strip()
        for prediction, label in zip(answered, labels):
            loop.correct(prediction["id"], int(label), token)
        assert loop.correct(answered[0]["id"], int(labels[0]), token)["credential"] == "labellers"
        (extra,) = loop.predict(images[:1])
        suggested = loop.correct(extra["id"], (extra["digit"] + 1) % 10)
        assert suggested["source"] == "suggestion"
        logged = read_log(loop.logs)
        assert (logged.labels[:-1] == labels).all() and set(logged.sources[:-1]) == {"trusted"}
        summary = loop.digits("feedback", "--log-dir", loop.logs).stdout
        assert f"corrected {wrong.sum()}" in summary, summary
        assert "suggestions pending review 1" in summary, summary

        # 3. Exported to a file, the labels are there to read, and `digits add` refuses the
        #    file's claim of origin; added from the log, they are a batch the checks accept.
        batch = tmp_path / "corrections.npz"
        loop.digits("feedback", "export", "--log-dir", loop.logs, "--out", batch)
        with np.load(batch) as exported:
            assert str(exported["origin"]) == "feedback"
            assert (exported["labels"] == labels).all()
            assert (exported["confirmed"] == ~wrong).all()
        refused = loop.digits("add", batch, "--reference-dir", loop.mnist, "--registry",
                              loop.registry, code=4)
        assert "holds 'origin': a file cannot say where its labels came from" in refused.stderr
        added = loop.digits("feedback", "export", "--add", "--log-dir", loop.logs, "--name",
                            "corrections", "--reference-dir", loop.mnist, "--registry",
                            loop.registry).stdout
        assert "accepted batch" in added, added
        [stored] = accepted_batches(tmp_path / "store")
        assert len(stored.images) == len(images) and stored.record["origin"] == "feedback"
        assert stored.record["credentials"] == {"labellers": len(images)}  # not the suggestion

        # 4. The retrain on MNIST plus the batch is promoted; the service follows the alias.
        assert "promoted v2" in loop.retrain()
        wait_for(lambda: loop.served_version() == "v2", FOLLOW_SECONDS + 5, "v2 in service",
                 every=0.25)

        # 5. The corrected digits, sent again, are now answered right, and logged as v2's.
        again = loop.predict(images[wrong])
        now = np.array([p["digit"] for p in again])
        assert (now == labels[wrong]).mean() > 0.9, f"{now} vs {labels[wrong]}"
        assert set(read_log(loop.logs).versions[-len(again):]) == {"v2"}
    manifest = json.loads((loop.registry / "v2" / "manifest.json").read_text())
    assert [b["name"] for b in manifest["data"]["snapshot"]["batches"]] == ["corrections"]
