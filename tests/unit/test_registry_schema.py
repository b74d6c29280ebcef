"""One manifest schema (digits/registry/manifest.schema.json): publish, verify, the card and `models`."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Required

import pytest
from jsonschema import Draft202012Validator

from digits.errors import RegistryError
from digits.files import sha256_bytes
from digits.registry.gate import GateRule
from digits.registry.manifest import DIGEST_KEY, SCHEMA_FILE, Manifest, dump_json
from digits.registry.store import Registry
from tests.helpers.manifests import FULL
from tests.helpers.synth import snapshot_tree


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def without(manifest: dict, dotted: str) -> dict:
    """A deep copy of `manifest` less one (dotted) key."""
    copy = json.loads(json.dumps(manifest))
    *parents, last = dotted.split(".")
    target = copy
    for key in parents:
        target = target[key]
    del target[last]
    return copy


def rewrite(path: Path, manifest: dict) -> None:
    """Write a manifest that passes its own digest check: only the schema can catch it."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    path.write_bytes(dump_json({**body, DIGEST_KEY: sha256_bytes(dump_json(body))}))


JSON_TYPES = {str: "string", float: "number", int: "integer", dict: "object", type(None): "null"}


def json_type(hint) -> str | list[str]:
    """The JSON Schema `type` a TypedDict field's annotation stands for."""
    if typing.get_origin(hint) is Required:
        return json_type(typing.get_args(hint)[0])
    if typing.is_typeddict(hint):
        return "object"
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [json_type(arg) for arg in args]
    return JSON_TYPES[typing.get_origin(hint) or hint]


def test_the_schema_file_is_valid_and_matches_the_typed_manifest():
    schema = json.loads(SCHEMA_FILE.read_text())
    Draft202012Validator.check_schema(schema)
    hints = typing.get_type_hints(Manifest, include_extras=True)
    assert set(hints) == set(schema["properties"])
    # Read from the annotations: under `from __future__ import annotations` Python 3.11's
    # TypedDict cannot see Required[] (its __required_keys__ is empty).
    required = {name for name, hint in hints.items() if typing.get_origin(hint) is Required}
    assert set(schema["required"]) == required
    # Each field has the same type in the file as in the code that writes it.
    assert {name: json_type(hint) for name, hint in hints.items()} == {
        name: field["type"] for name, field in schema["properties"].items()}


@pytest.mark.parametrize(
    "manifest, field",
    [
        (without(FULL, "metrics"), "metrics"),
        (without(FULL, "metrics.accuracy"), "accuracy"),
        (without(FULL, "model"), "model"),
        ({**FULL, "metrics": {**FULL["metrics"], "accuracy": 1.5}}, "metrics/accuracy"),
        ({**FULL, "metrics": {**FULL["metrics"], "accuracy": "0.98"}}, "metrics/accuracy"),
        ({**FULL, "metrics": None}, "metrics"),
        ({**FULL, "model": ""}, "model"),
        ({**FULL, "threshold": 2}, "threshold"),
    ],
)
def test_publish_refuses_a_manifest_outside_the_schema_before_touching_the_registry(
    registry, source, manifest, field
):
    with pytest.raises(RegistryError, match=f"manifest.*{field}") as caught:
        registry.publish(source, manifest)
    assert "\n" not in str(caught.value)
    assert not registry.root.exists()
    registry.publish(source, FULL)
    before = snapshot_tree(registry.root)
    with pytest.raises(RegistryError):
        registry.publish(source, manifest)
    assert snapshot_tree(registry.root) == before


def test_every_field_written_today_is_accepted_and_reads_back(registry, source):
    rule = GateRule(0.98, threshold=0.97, regression_tolerance=0.002)
    assert registry.publish(source, FULL) == "v1"
    decision, version = registry.promote_if(source, FULL, rule)
    assert decision.promote and version == "v2"
    assert registry.verify() == ["v1", "v2"]
    assert registry.manifest("v2")["gate"]["production_version"] == "v1"
    card = (registry.root / "v2" / "card.md").read_text()
    assert "Test accuracy: **0.9800**" in card and "architecture `cnn`" in card


@pytest.mark.parametrize("field", ["created_at", "model", "metrics.accuracy", "version"])
def test_a_stored_manifest_outside_the_schema_fails_verify_and_models_exits_5(
    registry, source, cli, field
):
    registry.publish(source, FULL)
    path = registry.root / "v1" / "manifest.json"
    rewrite(path, without(json.loads(path.read_bytes()), field))
    with pytest.raises(RegistryError, match=f"{path}: .*{field.split('.')[-1]}"):
        registry.verify()
    code, out, err = cli("models", "--registry", registry.root)
    assert code == 5 and out == ""
    assert err.startswith("error: ") and str(path) in err and err.count("\n") == 1


def test_models_prints_every_manifest_publish_accepted(registry, source, cli):
    registry.publish(source, {"model": "mlp", "metrics": {"accuracy": 0.975}})  # the least
    registry.publish(source, FULL)
    code, out, _ = cli("models", "--registry", registry.root)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["v1", "v2"]
    assert "accuracy 0.9750" in out.splitlines()[0] and "production" in out.splitlines()[1]
    code, out, _ = cli("models", "--json", "--registry", registry.root)
    listed = json.loads(out)
    assert [v["metrics"]["accuracy"] for v in listed] == [0.975, 0.98]
    assert all({"version", "path", "created_at", "aliases", "model"} <= set(v) for v in listed)


def test_the_environment_records_the_onednn_setting(monkeypatch):
    from digits.registry.manifest import environment

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert environment()["TF_ENABLE_ONEDNN_OPTS"] == "0"
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    assert environment()["TF_ENABLE_ONEDNN_OPTS"] == "unset"  # TensorFlow decides by the CPU


def test_the_environment_records_the_platform_and_the_tensorflow_distribution():
    import platform

    from digits.registry.manifest import environment

    recorded = environment()
    assert recorded["platform"] == f"{platform.system()} {platform.machine()}"
    # tensorflow-cpu on x86_64, tensorflow elsewhere (pyproject's markers): one of them
    assert {"tensorflow-cpu", "tensorflow"} & set(recorded)
