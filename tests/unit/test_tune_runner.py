"""The Dask cluster a `digits tune` run starts for its trials: what it exposes."""

import pytest


@pytest.mark.slow  # imports flows.tune, which loads Keras
def test_the_local_cluster_dashboard_listens_on_loopback_only():
    from flows.tune import trial_runner

    kwargs = trial_runner(2, None, "http://127.0.0.1:1/api").cluster_kwargs
    host, _, port = kwargs["dashboard_address"].rpartition(":")
    assert (host, port) == ("127.0.0.1", "0")  # a free port, on this machine only
