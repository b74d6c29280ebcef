import io
import os
import shutil
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout

import pytest

from digits.cli import main

# Every test in these folders runs a flow, trains, reads real MNIST or starts a server: a
# second or more each, so `slow` (`make test-fast`, `-m "not slow"`, leaves them out).
COSTLY_FOLDERS = {"flow", "model", "data", "integration"}


def pytest_configure(config: pytest.Config) -> None:
    """A Prefect home of this session's own, before anything imports Prefect: `make test`
    runs a pytest worker per core, and two `digits run` subprocesses on one SQLite database
    (the project's .prefect/, which the Makefile exports) would race its migrations. It also
    keeps the tests' runs out of the runs `make ui` shows. A test that needs another home
    sets its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    home = tempfile.mkdtemp(prefix=f"digits-tests-prefect-{worker}-")
    os.environ["PREFECT_HOME"] = home
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    share_the_cores()


def share_the_cores() -> None:
    """TensorFlow sizes its thread pools to every core, in each pytest worker and in each
    process a test starts: with a worker per core they spin against each other. So each
    worker's TensorFlow gets its share of the cores, as `digits tune` gives each Dask worker
    (two model-test files, run alone, took 8% fewer CPU-seconds so); a caller's setting wins."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(share))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


# The order `make test` hands files to its workers (with --no-loadscope-reorder, which
# otherwise puts the files with the most tests first): the few long files first, the many
# short ones of tests/unit last, where they fill the gaps at the end. With xdist's own order
# a real-MNIST run and the Dask cluster started last, beside idle workers.
FIRST_TO_LAST = ("integration", "data", "flow", "model")
# Of tests/unit, the costliest files (15-70 CPU-s each: GX validations, forked imports,
# served models), before the rest: dealt out last, test_validate.py alone kept one worker
# busy 45 s after the other three had finished (`make test`, CPU-cost plugin).
LONGEST_UNIT_FILES = ("test_validate.py", "test_serve.py", "test_library_imports.py",
                      "test_serve_protocols.py", "test_tuning.py", "test_batch_report.py")
FOLDER_PLACE = {folder: place for place, folder in enumerate(FIRST_TO_LAST)}
UNIT_FILE_PLACE = {name: place for place, name in enumerate(LONGEST_UNIT_FILES)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name in COSTLY_FOLDERS:
            item.add_marker(pytest.mark.slow)
    items.sort(key=dealing_order)  # stable: a file's tests keep their order


def dealing_order(item: pytest.Item) -> tuple[int, int]:
    """FIRST_TO_LAST's folders, then tests/unit with its LONGEST_UNIT_FILES first."""
    folder = FOLDER_PLACE.get(item.path.parent.name, len(FOLDER_PLACE))
    in_unit = folder == len(FOLDER_PLACE)
    return folder, (UNIT_FILE_PLACE.get(item.path.name, len(UNIT_FILE_PLACE)) if in_unit else 0)


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str, str]:
    """Run `digits ARGS...` in this process; return (exit code, stdout, stderr).

    Plain StringIO buffers rather than capsys: Prefect's log handler keeps the stream it
    first saw, and capsys closes its streams at the end of each test.
    """
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "argv", ["digits", *map(str, args)])
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
        main()
    return done.value.code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli(monkeypatch):
    """`cli(*args)`: run_cli within this test's monkeypatch."""
    return lambda *args: run_cli(monkeypatch, *args)
