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
    "digits.registry.card": set(),
    "digits.registry.gate": set(),
    "digits.registry.manifest": set(),
    "digits.registry.store": set(),
    "digits.files": set(),
    "digits.data.batches": set(),
    "digits.data.snapshot": set(),
    "digits.data.ingest": set(),
    "digits.data.splits": set(),
    "digits.serving.predictor": set(),
    "digits.serving.app": set(),  # FastAPI only: the model runtime loads with a model
    "digits.model.evaluate": set(),
    "digits.checks.suites": {"great_expectations"},
    "digits.checks.batch": {"great_expectations"},  # GX validates the measured numbers
    "digits.checks.drift": set(),  # scikit-learn; Keras only once a model gives features
    "digits.model.architectures": {"keras", "tensorflow"},
    "digits.model.train": {"keras", "tensorflow"},
    "digits.model.export": {"keras", "tensorflow"},
    "digits.model.tuning": set(),  # Optuna and NumPy; Keras only inside a trial
    "digits.model.reproduce": {"keras", "tensorflow"},  # it retrains
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
    assert library_modules() == set(ALLOWED)


def library_modules() -> set[str]:
    """Every module of the library, subpackages included (their __init__ files hold docs only)."""
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "digits").rglob("*.py")
        if path.stem != "__init__"
    }
