"""What a run of a deployment may change (flows/deployed.py, issue 28 repro 3): anyone who
reaches the Prefect API can start `retrain/weekly` with parameters of their own, so the
folders are the deployment's and the gate is never weaker than the defaults. The server
side is in tests/integration/test_scheduled_retraining.py and test_batch_trigger.py."""

from pathlib import Path

import pytest

from digits.config import DEFAULT_REGRESSION_TOLERANCE
from digits.errors import UsageError
from flows.deployed import FIXED, check_deployment_run, refused_parameters

DEPLOYED = {"model": "cnn", "store_dir": "/srv/digits/data", "registry": "/srv/digits/registry"}
# What the flow receives when the run sets nothing of its own: the deployment's, validated.
RUN = {"data_dir": None, "store_dir": Path("/srv/digits/data"),
       "registry": Path("/srv/digits/registry"), "min_train_rows": None,
       "regression_tolerance": DEFAULT_REGRESSION_TOLERANCE}


def test_a_run_with_the_deployments_folders_and_gate_is_allowed():
    assert refused_parameters(RUN, DEPLOYED) == []
    stricter = {**RUN, "regression_tolerance": 0.0}  # a stricter gate is anyone's to ask
    assert refused_parameters(stricter, DEPLOYED) == []


@pytest.mark.parametrize("name, value", [
    ("registry", Path("/tmp/mine")), ("store_dir", Path("/tmp/store")),
    ("data_dir", Path("/tmp/mnist")), ("min_train_rows", 10)])
def test_a_run_may_not_choose_its_folders(name, value):
    assert name in FIXED
    [refused] = refused_parameters({**RUN, name: value}, DEPLOYED)
    assert refused.startswith(f"{name}={value}")


@pytest.mark.parametrize("tolerance", [None, DEFAULT_REGRESSION_TOLERANCE * 2])
def test_a_run_may_not_weaken_the_regression_check(tolerance):
    [refused] = refused_parameters({**RUN, "regression_tolerance": tolerance}, DEPLOYED)
    assert refused.startswith(f"regression_tolerance={tolerance}")
    # ...not even when the deployment itself says so: only `digits run` may.
    deployed = {**DEPLOYED, "regression_tolerance": tolerance}
    assert refused_parameters({**RUN, "regression_tolerance": tolerance}, deployed)


def test_the_issue_repro_is_refused_naming_every_parameter():
    """`retrain/weekly` started with its own data_dir, registry and regression_tolerance=null."""
    run = {**RUN, "data_dir": Path("/tmp/x"), "registry": Path("/tmp/r"),
           "regression_tolerance": None}
    assert [r.split("=")[0] for r in refused_parameters(run, DEPLOYED)] == [
        "data_dir", "registry", "regression_tolerance"]


def test_a_deployment_whose_folders_were_not_filled_in_is_refused():
    deployed = {**DEPLOYED, "store_dir": "{{ $DIGITS_DATA }}"}
    run = {**RUN, "store_dir": Path("{{ $DIGITS_DATA }}")}
    [refused] = refused_parameters(run, deployed)
    assert "{{ $DIGITS_DATA }}" in refused and "make deploy" in refused


@pytest.mark.slow  # runs a flow
def test_outside_a_deployment_run_the_caller_chooses():
    # `digits run --no-regression-check --registry X`: a person at this machine.
    check_deployment_run({**RUN, "regression_tolerance": None, "registry": Path("/tmp/r")})


def test_refusals_are_usage_errors(monkeypatch):
    from flows import deployed

    monkeypatch.setattr(deployed, "deployment_parameters", lambda: ("retrain/weekly", DEPLOYED))
    with pytest.raises(UsageError, match=r"^a run of retrain/weekly may not set registry="):
        check_deployment_run({**RUN, "registry": Path("/tmp/r")})
