"""The library imports without the orchestration layer, and each module only what it needs.

Each module is imported in a fresh interpreter: a consumer loading a model, or a serving
process, must not pay for (or depend on) Prefect, Great Expectations or TensorFlow.

Fresh, but not slow: one interpreter per group of modules that may import the same heavy
packages loads those (and the light libraries everyone uses) once, then forks a child per
module, so each child pays only for its own module. A preloaded package that dragged in
something heavy would show in every child of its group and fail the check, not hide it.
"""

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("prefect", "great_expectations", "tensorflow", "keras", "flows", "tasks")

# module -> the heavy packages it may import (because its stage needs them)
ALLOWED = {
    "digits.config": set(),
    "digits.environment": set(),
    "digits.__main__": set(),  # `python -m digits`: the console script
    # The commands import what they run inside themselves; the pipeline's import flows there.
    "digits.cli.__main__": set(),
    "digits.cli.app": set(),
    "digits.cli.console": set(),
    "digits.cli.registry": set(),
    "digits.cli.serving": set(),
    "digits.cli.data": set(),
    "digits.cli.reproduce": set(),
    "digits.cli.feedback": set(),
    "digits.cli.tokens": set(),
    "digits.cli.pipeline": set(),
    "digits.errors": set(),
    "digits.registry.card": set(),
    "digits.registry.gate": set(),
    "digits.registry.manifest": set(),
    "digits.registry.store": set(),
    "digits.registry.load": set(),  # onnxruntime and Keras only inside the loaders
    "digits.registry.fetch": set(),
    "digits.registry.aliases": set(),
    "digits.registry.layout": set(),
    "digits.registry.reading": set(),
    "digits.registry.lock": set(),
    "digits.registry.versions": set(),
    # The object-store registry: boto3 only inside S3Objects, when a store is named.
    "digits.registry.location": set(),
    "digits.registry.objects": set(),
    "digits.registry.remote": set(),
    "digits.registry.commits": set(),
    "digits.files": set(),
    "digits.data.batches": set(),
    "digits.data.check_record": set(),  # the standard library only (and the checks' version)
    "digits.data.intake": set(),
    "digits.data.snapshot": set(),
    "digits.data.ingest": set(),
    "digits.data.splits": set(),
    "digits.data.images": set(),  # numpy and Pillow only
    "digits.data.normalize": set(),  # numpy and Pillow only
    "digits.data.typeset": set(),  # numpy and Pillow; matplotlib's fonts found by path
    "digits.data.negatives": set(),  # numpy and Pillow; matplotlib's files found by path
    "digits.monitoring.records": set(),  # numpy and the standard library only
    "digits.monitoring.log": set(),  # numpy and the standard library only
    "digits.monitoring.index": set(),  # the standard library only
    "digits.monitoring.rotation": set(),  # the standard library and the format's helpers
    "digits.monitoring.reader": set(),  # numpy and the standard library only
    "digits.monitoring.feedback": set(),  # numpy and the standard library only
    "digits.monitoring.tokens": set(),  # the standard library (filelock when writing)
    "digits.monitoring.review": set(),  # numpy and the standard library only
    "digits.monitoring.since": set(),  # the standard library only
    "digits.monitoring.traffic": set(),  # scikit-learn; Keras once a model gives features
    "digits.monitoring.traffic_report": set(),  # matplotlib
    "digits.monitoring.verdict": set(),  # the standard library and the format's helpers
    "digits.serving.app": set(),  # FastAPI only: the model runtime loads with a model
    "digits.serving.server": set(),  # uvicorn only when it runs
    "digits.serving.holder": set(),
    "digits.serving.inputs": set(),
    "digits.serving.documents": set(),  # orjson and numpy
    "digits.serving.errors": set(),
    "digits.serving.guards": set(),
    "digits.serving.feedback": set(),
    "digits.serving.metrics": set(),  # prometheus_client
    "digits.serving.protocols": set(),
    "digits.serving.registry_routes": set(),
    "digits.serving.openapi": set(),  # FastAPI's document builder
    "digits.serving.schemas": set(),
    "digits.serving.scorer": set(),
    "digits.serving.oip": set(),
    "digits.serving.oip_request": set(),
    "digits.serving.versions": set(),
    "digits.serving.mlflow_protocol": set(),
    "digits.serving.tfserving": set(),
    "digits.serving.settings": set(),
    "digits.model.evaluate": set(),
    "digits.checks.suites": {"great_expectations"},
    "digits.checks.docs": {"great_expectations"},  # the GX context and its Data Docs site
    "digits.checks.version": set(),  # two constants: the data layer reads them
    "digits.checks.settings": set(),  # BatchChecks: plain Python, data.intake reads its limits
    "digits.checks.policy": set(),
    "digits.checks.measure": {"great_expectations"},  # suites' digest; Keras once a model is there
    "digits.checks.batch": {"great_expectations"},  # GX validates the measured numbers
    "digits.checks.drift": set(),  # scikit-learn; Keras only once a model gives features
    "digits.checks.evidence": set(),  # GX and Keras only when gathering
    "digits.checks.charts": set(),  # matplotlib only when it draws
    "digits.checks.render": set(),  # Pillow, matplotlib; GX and Keras only when gathering
    "digits.model.architectures": {"keras", "tensorflow"},
    "digits.model.train": {"keras", "tensorflow"},
    "digits.model.export": {"keras", "tensorflow"},
    "digits.model.calibration": {"keras", "tensorflow"},
    "digits.model.layers": {"keras", "tensorflow"},
    "digits.model.exposure": {"keras", "tensorflow"},
    "digits.model.not_a_digit": set(),  # NumPy only: serving an ONNX version applies it
    "digits.model.study_report": set(),  # Optuna and matplotlib
    "digits.model.tuning": set(),  # Optuna and NumPy
    "digits.model.trial": set(),  # Keras only inside a trial
    "digits.model.study": set(),  # Optuna only: the ask-and-tell loop
    "digits.model.space": set(),  # plain Python: the CLI checks it before a flow starts
    "digits.model.reproduce": {"keras", "tensorflow"},  # it retrains
}


LIGHT = ("numpy", "pandas", "scipy", "sklearn", "PIL", "matplotlib.pyplot", "optuna",
         "filelock", "jsonschema", "typer", "fastapi")

# Run in a fresh interpreter: preload, then one forked child per module, each reporting
# the heavy packages loaded once its module was imported.
FORK_EACH = """
import importlib, json, os, sys
modules, preload, heavy = json.loads(sys.argv[1])
for name in preload:
    importlib.import_module(name)
results = {}
for module in modules:
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        importlib.import_module(module)
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
        os.write(write, json.dumps(loaded).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        results[module] = json.loads(pipe.read() or '["import failed"]')
    os.wait()
print(json.dumps(results))
"""


def imports_of(modules: list[str], preload: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the heavy packages loaded by importing it, in a forked fresh interpreter."""
    argument = json.dumps([modules, list(preload), HEAVY])
    result = subprocess.run(
        [sys.executable, "-c", FORK_EACH, argument], cwd=ROOT, capture_output=True,
        text=True, check=True,
    )
    return {name: set(found) for name, found in json.loads(result.stdout).items()}


@cache
def imports_of_group(allowed: frozenset[str]) -> dict[str, set[str]]:
    """The heavy imports of every module that may import `allowed`: the group preloads
    exactly that, so its children pay only for their own code."""
    modules = [module for module, may in ALLOWED.items() if may == allowed]
    return imports_of(modules, LIGHT + tuple(sorted(allowed)))


# Modules allowed Keras or GX take seconds to import even forked: `make test-fast` skips them.
@pytest.mark.parametrize(
    "module",
    [pytest.param(m, marks=pytest.mark.slow) if ALLOWED[m] else m for m in sorted(ALLOWED)],
)
def test_library_module_imports_only_what_its_stage_needs(module):
    allowed = frozenset(ALLOWED[module])
    assert imports_of_group(allowed)[module] <= allowed


@pytest.mark.slow  # it imports Prefect
def test_the_check_catches_a_heavy_import():
    """A light module that imports Prefect is caught, preloads or not."""
    assert imports_of(["flows.outcome"], LIGHT)["flows.outcome"] >= {"prefect"}


def test_every_library_module_is_checked():
    assert library_modules() == set(ALLOWED)


def library_modules() -> set[str]:
    """Every module of the library, subpackages included. Their __init__ files hold docs
    only, but digits/__init__.py's `load`, which imports lazily (tests/model/test_export.py
    runs it), and digits/cli/__init__.py, which imports the command modules checked here."""
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "digits").rglob("*.py")
        if path.stem != "__init__"
    }


@pytest.mark.slow  # it imports Prefect
def test_the_deployed_flows_import_no_model_or_validation_library():
    """`prefect deploy`, `digits schedule` and every worker's flow run import the flow module;
    a run refused before its data is read, or skipped with nothing new, never trains or
    validates, so TensorFlow and GX load when a stage needs them (tasks/train.py)."""
    flows = ["flows.retrain", "flows.tune", "flows.drift"]
    found = imports_of(flows, LIGHT)
    assert {flow: found[flow] & {"tensorflow", "keras", "great_expectations"}
            for flow in flows} == dict.fromkeys(flows, set())
