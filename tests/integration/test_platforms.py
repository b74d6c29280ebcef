"""The pinned set installs on every platform and Python of the README's matrix: a
binary-only resolution succeeds for each (uv's, for the target: tests/helpers/platforms.py
says why not pip's dry run), and every package it would install is pinned there."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers.platforms import PLATFORMS, PYTHONS, pins, resolve, write_inputs

pytestmark = pytest.mark.index

PIPELINE = ("pipeline", "dev")  # what `make run` and `make test` install
HEAVY = {"tensorflow", "tensorflow-cpu", "keras", "prefect", "great-expectations"}

# The pipeline install where there is one, the consumer install where there is not, and
# once beside a pipeline (the first), to hold it free of the training stack. The consumer
# set needs no resolution of its own beside each pipeline: its requirements are the
# pipeline's without the extras, under the same pins, so where the pipeline set resolves
# with wheels only, every package the consumer set takes is among those resolved.
TARGETS = [
    pytest.param(platform, python, extras, id=f"{platform.name}-{python}-{name}")
    for platform in PLATFORMS
    for python in PYTHONS
    for name, extras in (("pipeline", PIPELINE), ("consumer", ()))
    if (extras == PIPELINE) == platform.pipeline
    or (extras == () and (platform, python) == (PLATFORMS[0], PYTHONS[0]))
]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, dict[str, str] | AssertionError]:
    """Every target's resolution at once: uv waits on the index, hardly on the CPU."""
    root = tmp_path_factory.mktemp("resolve")
    inputs = [write_inputs(*target.values, root / target.id) for target in TARGETS]

    def attempt(target, files):
        platform, python, _ = target.values
        try:
            return resolve(platform, python, files)
        except AssertionError as error:
            return error

    with ThreadPoolExecutor(max_workers=len(TARGETS)) as pool:
        return dict(zip((t.id for t in TARGETS), pool.map(attempt, TARGETS, inputs)))


@pytest.mark.parametrize(("platform", "python", "extras"), TARGETS)
def test_the_pinned_set_resolves_with_wheels_only(platform, python, extras, resolved, request):
    found = resolved[request.node.callspec.id]
    if isinstance(found, AssertionError):
        raise found
    pinned = pins(platform.environment(python))
    assert sorted(set(found) - set(pinned)) == [], "resolved but not pinned in constraints.txt"
    assert {name: version for name, version in found.items() if pinned[name] != version} == {}
    if extras:
        assert "keras" in found and ({"tensorflow", "tensorflow-cpu"} & set(found))
    else:
        assert "onnxruntime" in found and not HEAVY & set(found)


def test_intel_macs_get_no_pipeline(tmp_path):
    # TensorFlow's last Intel-Mac wheels are 2.16's: the README says the consumer install only.
    [intel] = [p for p in PLATFORMS if not p.pipeline]
    with pytest.raises(AssertionError, match="tensorflow"):
        resolve(intel, "3.11", write_inputs(intel, "3.11", PIPELINE, tmp_path))
