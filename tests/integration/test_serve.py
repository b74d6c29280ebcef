"""A real `digits serve` process on a free loopback port: predictions, bad input (the
process keeps answering), and following the alias after `digits promote` and `rollback`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from digits.data.images import load_inputs
from digits.registry.store import Registry
from tests.helpers.processes import (
    BIN,
    REPO,
    answers,
    background,
    free_port,
    tail,
    wait_for,
)
from tests.helpers.serving import (
    claimed_size_png,
    digit_png,
    mnist_like,
    publish_model,
    replace_file,
    save_tiny_model,
)

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 120  # imports TensorFlow to load the first model: slow on a busy machine
FOLLOW_SECONDS = 5.0  # the promise after promote/rollback


@dataclass
class Service:
    url: str
    registry: Registry
    log: Path
    env: dict[str, str]

    def digits(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "digits"), *args, "--registry", str(self.registry.root)],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )

    def version(self) -> str:
        body = {"instances": mnist_like(1).tolist()}
        answer = httpx.post(f"{self.url}/v1/predict", json=body, timeout=10)
        return answer.json()["model"]["version"]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("serve")
    registry = Registry(root / "registry")
    publish_model(registry, save_tiny_model(root / "a.keras", 1), accuracy=0.981)
    publish_model(registry, save_tiny_model(root / "b.keras", 2), accuracy=0.985, alias=None)
    registry.set_alias("production", "v1")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    port = free_port()
    command = [str(BIN / "digits"), "serve", "--port", str(port), "--registry", str(registry.root)]
    log = root / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with background(command, env, log) as process:
        ready = f"{url}/readyz"
        wait_for(lambda: answers(ready, process, log), STARTUP_SECONDS, ready, every=0.5, log=log)
        yield Service(url, registry, log, env)


def test_predicts_uploaded_images_of_both_polarities_like_digits_predict(service, tmp_path):
    import keras

    paths = [tmp_path / "light.png", tmp_path / "dark.png"]
    paths[0].write_bytes(digit_png())
    paths[1].write_bytes(digit_png(dark_ink=True, size=(400, 300)))
    files = [("file", (path.name, path.read_bytes(), "image/png")) for path in paths]

    answer = httpx.post(f"{service.url}/v1/predict", files=files, timeout=10)

    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == {"version": "v1", "ref": "production"}
    model = keras.saving.load_model(service.registry.root / "v1" / "model.keras", safe_mode=True)
    expected = model.predict(load_inputs(paths)[1], verbose=0)
    got = np.array([row["probabilities"] for row in answer.json()["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_json_instances(service):
    answer = httpx.post(
        f"{service.url}/v1/predict", json={"instances": mnist_like(3).tolist()}, timeout=10
    )
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3


@pytest.mark.parametrize(
    "request_args, status",
    [
        ({"files": {"file": ("a.png", b"not an image", "image/png")}}, 422),
        ({"content": b"", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"x" * 2_000_001, "headers": {"content-type": "application/json"}}, 413),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"instances": [[[300] * 28] * 28]}}, 422),
        ({"json": {"instances": [[[0] * 28] * 3]}}, 422),
    ],
    ids=["not-an-image", "empty-body", "over-2MB", "bad-json", "over-255", "wrong-shape"],
)
def test_bad_input_gets_a_4xx_and_the_process_keeps_answering(service, request_args, status):
    answer = httpx.post(f"{service.url}/v1/predict", timeout=10, **request_args)
    assert answer.status_code == status and answer.json()["error"]
    assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
    assert service.version() == "v1"


def test_decompression_bomb_is_refused(service):
    bomb = {"file": ("bomb.png", claimed_size_png(8000, 8000), "image/png")}
    answer = httpx.post(f"{service.url}/v1/predict", files=bomb, timeout=10)
    assert answer.status_code == 413 and "over the limit" in answer.json()["error"]


def follow(service: Service, version: str) -> float:
    """Seconds until the service answers from `version`; fails after FOLLOW_SECONDS."""
    start = time.monotonic()
    while service.version() != version:
        if time.monotonic() - start > FOLLOW_SECONDS:
            pytest.fail(f"not serving {version} after {FOLLOW_SECONDS} s\n{tail(service.log)}")
        time.sleep(0.1)
    return time.monotonic() - start


def test_follows_promote_and_rollback_without_a_restart(service):
    promoted = service.digits("promote", "v2")
    assert promoted.returncode == 0, promoted.stderr
    follow(service, "v2")
    rolled_back = service.digits("rollback")
    assert rolled_back.returncode == 0, rolled_back.stderr
    follow(service, "v1")


def test_a_tampered_new_version_is_not_served(service, tmp_path):
    version = publish_model(
        service.registry, save_tiny_model(tmp_path / "c.keras", 3), alias=None
    )
    with (service.registry.root / version / "model.keras").open("ab") as model:
        model.write(b"tampered")
    aliases = service.registry.root / "aliases.json"
    before = aliases.read_text()
    replace_file(aliases, json.dumps({"production": version}))  # as if the disk changed
    try:
        wait_for(
            lambda: httpx.get(f"{service.url}/readyz", timeout=5).json()["problem"],
            FOLLOW_SECONDS, "/readyz to report the tampered version", every=0.1,
        )
        ready = httpx.get(f"{service.url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["model"]["version"] == "v1"
        assert f"production -> {version} not loaded" in ready.json()["problem"]
        assert service.version() == "v1"
        assert f"production -> {version} not loaded" in service.log.read_text()
    finally:
        replace_file(aliases, before)
