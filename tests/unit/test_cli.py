"""The registry commands of `digits`: output, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digits.registry.store import Registry

REPO = Path(__file__).resolve().parents[2]


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


# Runs `digits ARGS...` in a fresh interpreter and reports which heavy packages it imported.
PROBE = """
import sys
from digits.cli import main
try:
    main()
finally:
    heavy = {"prefect", "keras", "tensorflow", "great_expectations"}
    print(sorted(heavy & {name.split(".")[0] for name in sys.modules}), file=sys.stdout)
"""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threshold", "0.9"], "--threshold"),
        (["--model", "resnet"], "--model"),
        (["--epochs", "0"], "--epochs"),
    ],
)
def test_usage_errors_exit_2_before_anything_runs(args, message, tmp_path):
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": str(REPO)}
    for name in ("DIGITS_REGISTRY", "DIGITS_DATA", "DIGITS_ARTIFACTS", "PREFECT_API_URL"):
        env.pop(name, None)  # the defaults are relative to the working folder: tmp_path
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "run", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error")
    # Neither Prefect (so no server) nor TensorFlow nor GX was even imported...
    assert result.stdout.strip().splitlines()[-1] == "[]"
    # ...and nothing was written: no registry, data cache, Data Docs or Prefect database.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["prefect-home"]
    assert not any(home.iterdir())


def test_run_keeps_the_help_and_bounds_of_its_own_options():
    # The training flags are added to `run`'s signature; its own options must keep their
    # Annotated help and bounds (string annotations once lost both).
    from typer.testing import CliRunner

    from digits.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    from digits.config import PRESETS

    assert "Preset to start from: mlp (the original script), cnn (the default) or best" in shown
    assert all(f"{name} (" in shown for name in PRESETS)  # every preset is named
    assert "--no-no-regression-check" not in shown and "--no-force" not in shown
    refused = runner.invoke(app, ["run", "--regression-tolerance", "-1"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "greater than or equal to 0" in refused.output


# Runs `python -m MODULE ARGS...` (`digits` or `digits.cli`) where Prefect cannot be
# imported: None in sys.modules makes `import prefect` raise ImportError.
WITHOUT_PREFECT = """
import runpy, sys
sys.modules["prefect"] = None
runpy.run_module("{module}", run_name="__main__", alter_sys=True)
"""
# In the order `digits --help` lists them: the library's panel, then the flows'.
COMMANDS = ["models", "fetch", "verify", "promote", "rollback", "predict", "serve", "reproduce",
            "data", "feedback", "run", "tune", "schedule", "add", "drift"]


def without_prefect(module: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PREFECT.format(module=module), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("module", ["digits", "digits.cli"])
def test_library_commands_work_where_prefect_cannot_be_imported(module, registry, tmp_path):
    result = without_prefect(module, "models", "--registry", tmp_path / "empty", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "no versions yet\n"), result.stderr
    result = without_prefect(module, "verify", "v1", "--registry", registry, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "ok: v1\n"), result.stderr
    result = without_prefect(module, "fetch", "v9", "--dest", "out", "--registry", registry,
                             cwd=tmp_path)
    assert result.returncode == 5
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


# A consumer install (`pip install digits`, no pipeline extra): its packages are not there.
WITHOUT_PIPELINE = """
import sys
for name in ("prefect", "great_expectations", "keras", "tensorflow"):
    sys.modules[name] = None
from digits.cli import main
main()
"""
HINT = "needs the pipeline extra: pip install 'digits[pipeline]'"


def consumer_install(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", WITHOUT_PIPELINE, *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["run"], ["tune"], ["add", "batch.npz"], ["schedule"],
                                  ["drift", "--log-dir", "log"], ["reproduce", "v1"]])
def test_pipeline_commands_in_a_consumer_install_name_the_extra(args, registry, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = consumer_install(*args, "--registry", registry, cwd=work)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == f"error: digits {args[0]} {HINT}\n"
    assert list(work.iterdir()) == []  # nothing written: no data cache, no Prefect home


def test_a_version_without_onnx_in_a_consumer_install_names_the_extra(registry, tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((1, 28, 28), np.uint8))
    result = consumer_install("predict", "one.npy", "--registry", registry, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == f"error: v2 has no ONNX export, and its Keras model {HINT}\n"


@pytest.mark.parametrize("module", ["digits", "digits.cli"])
def test_help_lists_every_command_without_prefect(module, tmp_path):
    result = without_prefect(module, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[1] for line in result.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2]
    assert [name for name in listed if name in COMMANDS] == COMMANDS
    assert "DIGITS_ARTIFACTS" in result.stdout  # the environment the commands read


# TensorFlow's own answer, from its util_port extension loaded alone: importing it as
# tensorflow.python.util's would import all of TensorFlow first (~5 s a probe).
ONEDNN_PROBE = """
import importlib.machinery, importlib.util, pathlib
root = pathlib.Path(importlib.util.find_spec("tensorflow").origin).parent / "python" / "util"
path = str(next(root.glob("_pywrap_util_port*.so")))
loader = importlib.machinery.ExtensionFileLoader("_pywrap_util_port", path)
port = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
loader.exec_module(port)
print(port.IsMklEnabled())
"""


@pytest.mark.slow  # two interpreters load TensorFlow's runtime
def test_commands_train_with_onednn_kernels_unless_the_caller_says_no(tmp_path):
    # TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads; on AVX2-only CPUs it
    # would leave the faster kernels off.
    probe = ONEDNN_PROBE
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}

    def enabled(**extra) -> str:
        return subprocess.run(
            [sys.executable, "-m", "digits.environment", sys.executable, "-c", probe],
            cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, check=True,
        ).stdout.strip()

    assert enabled() == "True"
    assert enabled(TF_ENABLE_ONEDNN_OPTS="0") == "False"


def test_environment_defaults_leave_the_callers_values(tmp_path, monkeypatch):
    from digits.environment import ENV_DEFAULTS, default_environment

    monkeypatch.setattr(os, "environ", {"TF_CPP_MIN_LOG_LEVEL": "0"})
    monkeypatch.chdir(tmp_path)
    default_environment()
    assert os.environ == {**ENV_DEFAULTS, "TF_CPP_MIN_LOG_LEVEL": "0",
                          "PREFECT_HOME": str(tmp_path / ".prefect")}
    monkeypatch.setattr(os, "environ", {"PREFECT_HOME": "/elsewhere"})
    default_environment()
    assert os.environ["PREFECT_HOME"] == "/elsewhere"


def test_registry_defaults_to_digits_registry(cli, registry, monkeypatch):
    monkeypatch.setenv("DIGITS_REGISTRY", str(registry))
    code, out, _ = cli("models")
    assert code == 0 and out.split()[0] == "v1"
