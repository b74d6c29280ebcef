"""A real `digits serve` process on a free loopback port: predictions, bad input (the
process keeps answering), following the alias after `digits promote` and `rollback`, and a
burst of hostile requests beside good ones while the alias moves (bounded memory)."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from digits.data.images import load_inputs
from digits.registry.store import Registry
from digits.serving.settings import DEFAULT_MAX_DECODES, DEFAULT_MAX_PIXELS
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
    palette_png,
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
    process: subprocess.Popen

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
        yield Service(url, registry, log, env, process)


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


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """GET /metrics as (sample name, its labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_the_standard_protocols_and_metrics_answer_from_the_served_model(service):
    """OIP v2 and MLflow's /invocations give the served version's probabilities; /metrics
    counts them; the registry's metadata answers under /v1/registry."""
    import keras

    pixels = mnist_like(3, seed=5)
    path = service.registry.root / "v1" / "model.keras"
    expected = keras.saving.load_model(path, safe_mode=True).predict(
        pixels.astype(np.float32), verbose=0
    )
    before = scrape(service.url)
    image_tensor = {"name": "images", "shape": [3, 28, 28], "datatype": "UINT8",
                    "data": pixels.ravel().tolist()}
    infer = httpx.post(f"{service.url}/v2/models/digits/infer",
                       json={"inputs": [image_tensor]}, timeout=10)
    invocations = httpx.post(f"{service.url}/invocations", json={"instances": pixels.tolist()},
                             timeout=10)

    assert infer.status_code == 200, infer.text
    assert infer.json()["model_version"] == "v1"
    probabilities, digit = infer.json()["outputs"]
    np.testing.assert_allclose(np.reshape(probabilities["data"], (3, 10)), expected, atol=1e-5)
    assert digit["data"] == expected.argmax(axis=1).tolist()
    assert invocations.status_code == 200, invocations.text
    np.testing.assert_allclose(invocations.json()["predictions"], expected, atol=1e-5)
    assert httpx.get(f"{service.url}/v2/models/digits", timeout=5).json()["versions"] == ["v1"]
    for probe in ("/ping", "/v2/health/ready", "/v2/health/live"):
        assert httpx.get(f"{service.url}{probe}", timeout=5).status_code == 200, probe
    assert (httpx.get(f"{service.url}/v1/registry/versions", timeout=5).json()
            == httpx.get(f"{service.url}/v1/models", timeout=5).json())

    after = scrape(service.url)

    def grown(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0) - before.get(key, 0)

    digits = [str(d) for d in range(10)]
    assert sum(grown("digits_predictions_total", version="v1", digit=d) for d in digits) == 6
    assert grown("digits_prediction_confidence_count", version="v1") == 6
    assert grown("digits_http_requests_total", route="/v2/models/{name}/infer", status="200") == 1
    assert grown("digits_http_requests_total", route="/invocations", status="200") == 1
    assert after[("digits_model_ready", frozenset())] == 1
    info = {"version": "v1", "ref": "production", "backend": "keras"}
    assert after[("digits_model_info", frozenset(info.items()))] == 1


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


# --- a burst of hostile requests beside good ones, while the alias moves ------------------

ROUNDS = 3  # the reproduction: three rounds of 24 hostile uploads beside 24 digits
PER_ROUND = {"palette": 24, "four palettes": 4}  # hostile kinds sent more than OTHERS_PER_ROUND
OTHERS_PER_ROUND = 2
GOOD_PER_ROUND = 24  # spread over the good requests' inputs
CLIENTS = 8  # requests in flight at once
BURST_SECONDS = 180  # the whole burst, retries included; it takes ~15 s here
# Growth of the server's peak RSS over the burst. The decode slots hold at most
# DEFAULT_MAX_DECODES requests' input, each ~40 MB at the pixel limit (a 2048x2048 PNG
# decoded at 1 byte a pixel, widened to 4, premultiplied, then reduced) and a body of at most
# 2 MB; the other requests wait for a slot holding no body. Measured on 2 cores: +220..265 MB
# over ~660 MB at rest (+25 MB without the palette images: Keras on new batch sizes); three
# bursts in a row peaked at 912, 912 and 961 MB. The service reached 19-21 GB.
PEAK_GROWTH_MB = 100 * DEFAULT_MAX_DECODES
KILL_GROWTH_MB = 4 * PEAK_GROWTH_MB  # past this the test stops the server: the machine is shared


def limit_side() -> int:
    return math.isqrt(DEFAULT_MAX_PIXELS)


def hostile_requests(url: str) -> dict[str, tuple[dict, set[int]]]:
    """kind -> (httpx request arguments, the statuses it may get)."""
    palette = ("file", ("palette.png", palette_png(limit_side()), "image/png"))
    port = url.rsplit(":", 1)[1]
    seven = {"files": {"file": ("seven.png", digit_png(), "image/png")}}
    return {
        "palette": ({"files": [palette]}, {200, 503}),  # a valid 7, as heavy as allowed
        "four palettes": ({"files": [palette] * 4}, {200, 503}),  # the request's whole budget
        "five palettes": ({"files": [palette] * 5}, {413, 503}),
        "over the pixel limit": (
            {"files": {"file": ("big.png", claimed_size_png(limit_side() + 1, limit_side()),
                                "image/png")}},
            {413, 503},
        ),
        "truncated": ({"files": {"file": ("cut.png", digit_png()[:200], "image/png")}}, {422, 503}),
        "cross-site": ({**seven, "headers": {"origin": "http://evil.example"}}, {403}),
        "rebinding": ({**seven, "headers": {"host": f"evil.example:{port}"}}, {400}),
        "over 2 MB": ({"content": b"[" * 2_000_001,
                       "headers": {"content-type": "application/json"}}, {413}),
        "bad JSON": ({"content": b"{", "headers": {"content-type": "application/json"}},
                     {400, 503}),
    }


@dataclass
class Memory:
    """The server's resident memory, sampled; SIGKILLs it past `kill_kb` to spare the machine."""

    pid: int
    kill_kb: int
    killed: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def status_kb(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise KeyError(key)

    def watch(self) -> None:
        while not self.stop.wait(0.02):
            try:
                rss = self.status_kb("VmRSS")
            except (OSError, KeyError):  # the process is gone
                return
            if rss > self.kill_kb:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
                return


def move_alias(registry: Registry, stop: threading.Event, moves: list[str]) -> None:
    """Promote v2 and roll back to v1, over and over, as `digits promote` and `rollback` do."""
    while not stop.wait(0.4):
        moves.append(registry.set_alias("production", "v2"))
        if stop.wait(0.4):
            break
        moves.append(registry.rollback())


def expected_probabilities(service: Service, tmp_path: Path) -> tuple[dict, dict]:
    """Good requests (name -> arguments) and what each version answers to each."""
    import keras

    good, inputs = {}, {}
    for seed in range(4):
        pixels = mnist_like(2, seed=seed)
        good[f"json {seed}"] = {"json": {"instances": pixels.tolist()}}
        inputs[f"json {seed}"] = pixels.astype(np.float32)
    for name, data in (("light.png", digit_png()), ("dark.png", digit_png(True, (400, 300)))):
        (tmp_path / name).write_bytes(data)
        good[name] = {"files": {"file": (name, data, "image/png")}}
        inputs[name] = load_inputs([tmp_path / name])[1]  # what `digits predict` reads
    expected = {}
    for version in ("v1", "v2"):
        path = service.registry.root / version / "model.keras"
        model = keras.saving.load_model(path, safe_mode=True)
        expected[version] = {name: model.predict(x, verbose=0) for name, x in inputs.items()}
    return good, expected


def send(client: httpx.Client, url: str, arguments: dict, retry: bool, deadline: float):
    """One request; a good one is sent again after a 503, as its Retry-After asks."""
    while True:
        answer = client.post(f"{url}/v1/predict", timeout=60, **arguments)
        if not (retry and answer.status_code == 503 and time.monotonic() < deadline):
            return answer
        time.sleep(float(answer.headers.get("retry-after", "1")))


def test_a_burst_of_hostile_requests_beside_good_ones_while_the_alias_moves(service, tmp_path):
    good, expected = expected_probabilities(service, tmp_path)
    hostile = hostile_requests(service.url)
    plan = []
    for _ in range(ROUNDS):
        for kind in hostile:
            plan += [kind] * PER_ROUND.get(kind, OTHERS_PER_ROUND)
        plan += list(good) * (GOOD_PER_ROUND // len(good))
    random.Random(17).shuffle(plan)

    memory = Memory(service.process.pid, 0)
    Path(f"/proc/{memory.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the burst's peak
    before_kb = memory.status_kb("VmRSS")
    memory.kill_kb = before_kb + KILL_GROWTH_MB * 1024
    stop, moves = threading.Event(), []
    watcher = threading.Thread(target=memory.watch, daemon=True)
    mover = threading.Thread(target=move_alias, args=(service.registry, stop, moves), daemon=True)
    deadline = time.monotonic() + BURST_SECONDS
    start = time.monotonic()
    watcher.start()
    mover.start()
    try:
        limits = httpx.Limits(max_connections=CLIENTS)
        with httpx.Client(limits=limits) as client, ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(
                lambda kind: (kind, send(client, service.url, good.get(kind) or hostile[kind][0],
                                         kind in good, deadline)),
                plan,
            ))
    except httpx.HTTPError as error:
        killed = f"stopped by this test past +{KILL_GROWTH_MB} MB" if memory.killed else "alive"
        pytest.fail(f"a request got no answer ({error!r}); the server: {killed}\n"
                    f"{tail(service.log)}")
    finally:
        stop.set()
        memory.stop.set()
        mover.join(10)
        watcher.join(10)
    seconds = time.monotonic() - start
    assert not memory.killed, f"the server passed +{KILL_GROWTH_MB} MB and was stopped"
    assert service.process.poll() is None, tail(service.log)
    grown_mb = (memory.status_kb("VmHWM") - before_kb) / 1024

    statuses: dict[str, list[int]] = {}
    for kind, answer in answers:
        statuses.setdefault(kind, []).append(answer.status_code)
    print(f"{len(plan)} requests in {seconds:.1f} s, {len(moves)} alias moves, RSS "
          f"{before_kb / 1024:.0f} MB, peak +{grown_mb:.0f} MB; statuses {statuses}")
    for kind, answer in answers:
        if kind in good:
            assert answer.status_code == 200, (kind, answer.text)
            version = answer.json()["model"]["version"]
            got = [row["probabilities"] for row in answer.json()["predictions"]]
            np.testing.assert_allclose(got, expected[version][kind], atol=1e-5, err_msg=kind)
        else:
            assert answer.status_code in hostile[kind][1], (kind, answer.text)
            if kind == "rebinding":  # refused by Starlette's TrustedHostMiddleware, in its words
                assert answer.text == "Invalid host header"
            elif answer.status_code == 200:
                assert len(answer.json()["predictions"]) == len(hostile[kind][0]["files"])
            else:
                assert answer.json()["error"], (kind, answer.text)
    assert moves, "the alias never moved during the burst"
    assert grown_mb < PEAK_GROWTH_MB, f"peak RSS grew {grown_mb:.0f} MB"
    assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
    service.registry.set_alias("production", "v1")
    follow(service, "v1")
