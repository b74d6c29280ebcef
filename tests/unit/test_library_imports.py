"""The library imports without the orchestration layer, and each module only what it needs.

Each module is imported in a fresh interpreter: a consumer loading a model, or a serving
process, must not pay for (or depend on) Prefect, Great Expectations or TensorFlow.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("prefect", "great_expectations", "tensorflow", "keras", "flows", "tasks")

# module -> the heavy packages it may import (because its stage needs them)
ALLOWED = {
    "digits.config": set(),
    "digits.errors": set(),
    "digits.card": set(),
    "digits.gate": set(),
    "digits.manifest": set(),
    "digits.registry": set(),
    "digits.staging": set(),
    "digits.batches": set(),
    "digits.snapshot": set(),
    "digits.ingest": set(),
    "digits.preprocess": set(),
    "digits.predict": set(),
    "digits.serve": set(),  # FastAPI only: the model runtime loads with a model
    "digits.evaluate": set(),
    "digits.validate": {"great_expectations"},
    "digits.checks": {"great_expectations"},  # GX validates the measured numbers
    "digits.drift": set(),  # scikit-learn; Keras only once a model gives features
    "digits.models": {"keras", "tensorflow"},
    "digits.train": {"keras", "tensorflow"},
    "digits.export": {"keras", "tensorflow"},
    "digits.tuning": set(),  # Optuna and NumPy; Keras only inside a trial
    "digits.reproduce": {"keras", "tensorflow"},  # it retrains
}


def imported_heavy(module: str) -> set[str]:
    code = (
        f"import sys, json, {module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_library_module_imports_only_what_its_stage_needs(module):
    assert imported_heavy(module) <= ALLOWED[module]


def test_every_library_module_is_checked():
    modules = {f"digits.{p.stem}" for p in (ROOT / "digits").glob("*.py") if p.stem != "__init__"}
    assert modules == set(ALLOWED)
