import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """One temporary Prefect API (SQLite) for all flow tests in the session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(autouse=True)
def project_dirs(tmp_path, monkeypatch):
    """Keep GX Data Docs and the MNIST cache of a test inside its temporary folder."""
    monkeypatch.setenv("DIGITS_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("DIGITS_DATA", str(tmp_path / "data-cache"))
