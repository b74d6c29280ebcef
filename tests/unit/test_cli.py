"""The registry commands of `digits`: output, exit codes, one-line errors."""

import json

import pytest

from digits.registry import Registry


@pytest.fixture
def registry(tmp_path):
    """A registry with v1 and v2 (production), made of small stand-in files."""
    registry = Registry(tmp_path / "registry")
    for accuracy in (0.981, 0.992):
        build = tmp_path / f"build-{accuracy}"
        (build / "plots").mkdir(parents=True)
        (build / "model.keras").write_bytes(b"weights %f" % accuracy)
        (build / "plots" / "curves.png").write_bytes(b"\x89PNG fake")
        registry.publish(build, {"model": "mlp", "metrics": {"accuracy": accuracy}})
    return registry.root


def test_models_lists_versions_newest_last(cli, registry):
    code, out, _ = cli("models", "--registry", registry)
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["v1", "v2"]
    assert lines[1].endswith("production") and "0.9920" in lines[1]


def test_models_json_contract(cli, registry):
    code, out, _ = cli("models", "--json", "--registry", registry)
    entries = json.loads(out)
    assert code == 0
    for entry in entries:
        assert {"version", "path", "created_at", "aliases", "model", "metrics"} <= set(entry)
        assert entry["created_at"].endswith("+00:00") or entry["created_at"].endswith("Z")
    assert entries[-1]["aliases"] == ["production"]


def test_fetch_copies_verified_files_and_prints_model_path(cli, registry, tmp_path):
    code, out, _ = cli("fetch", "--dest", tmp_path / "out", "--registry", registry)
    assert code == 0
    assert out.strip() == str(tmp_path / "out" / "model.keras")
    assert (tmp_path / "out" / "model.keras").read_bytes() == b"weights 0.992000"


def test_flipped_byte_fails_fetch_and_verify_with_exit_5(cli, registry, tmp_path):
    model = registry / "v2" / "model.keras"
    data = bytearray(model.read_bytes())
    data[3] ^= 0x01
    model.write_bytes(bytes(data))

    code, _, err = cli("fetch", "v2", "--dest", tmp_path / "out", "--registry", registry)
    assert code == 5 and "model.keras" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    code, _, err = cli("verify", "--registry", registry)
    assert code == 5 and "v2" in err
    code, out, _ = cli("verify", "v1", "--registry", registry)
    assert code == 0 and "v1" in out


@pytest.mark.parametrize("ref", ["../v1", "/etc", "v1/../v2", "v0", "staging", ".."])
def test_path_like_and_unknown_refs_exit_5(cli, registry, ref, tmp_path):
    code, _, err = cli("fetch", ref, "--dest", tmp_path / "out", "--registry", registry)
    assert code == 5
    assert ref in err
    assert not (tmp_path / "out").exists()


def test_promote_and_rollback(cli, registry):
    assert cli("promote", "v1", "--registry", registry)[:2] == (0, "production -> v1\n")
    assert Registry(registry).aliases() == {"production": "v1"}
    assert cli("rollback", "--registry", registry)[:2] == (0, "production -> v2\n")
    assert Registry(registry).aliases() == {"production": "v2"}


def test_empty_registry(cli, tmp_path):
    code, out, _ = cli("models", "--registry", tmp_path / "none")
    assert (code, out.strip()) == (0, "no versions yet")
    code, _, err = cli("fetch", "--dest", tmp_path / "out", "--registry", tmp_path / "none")
    assert code == 5 and "production" in err
