import prefect.testing.utilities
import pytest
from prefect.testing.utilities import prefect_test_harness

from tests.helpers.prefect_db import migrated_database


# The package's scope (tests/flow/__init__.py makes it one): the harness stops when a worker
# moves on to other folders, instead of polling idle to the session's end (1.3 CPU-s a minute).
@pytest.fixture(scope="package", autouse=True)
def prefect_api(tmp_path_factory):
    """One temporary Prefect API (SQLite) for the flow tests a worker runs.

    Prefect's harness makes its database in a folder from mkdtemp(): it is handed one that
    holds a migrated copy already (tests/helpers/prefect_db.py), under the harness's name.
    """
    folder = tmp_path_factory.mktemp("prefect-harness")
    migrated_database(tmp_path_factory, folder / "prefect-test.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prefect.testing.utilities, "mkdtemp", lambda: str(folder))
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(autouse=True)
def project_dirs(tmp_path, monkeypatch):
    """Keep GX Data Docs and the MNIST cache of a test inside its temporary folder."""
    monkeypatch.setenv("DIGITS_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("DIGITS_DATA", str(tmp_path / "data-cache"))
