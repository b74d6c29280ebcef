"""`pip install .` (not editable) works outside the checkout, and a run of the `digits`
script lands in the Prefect home of the folder it ran in, where `prefect server` finds it.

The new environment sees the dependencies through a .pth file naming this environment's
site-packages, so nothing is downloaded. Such a line only adds the folder to sys.path and
runs none of the .pth files in it, so this environment's editable install of the checkout
stays out, and the sources are a copy deleted once built: only site-packages can run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flows.schedule import WEEKLY
from tests.helpers.processes import (
    BIN,
    REPO,
    answers,
    background,
    copy_sources,
    free_port,
    wait_for,
)
from tests.helpers.synth import make_digits, make_prototypes, write_dataset

pytestmark = pytest.mark.integration

FAST = ["--model", "mlp", "--epochs", "1", "--min-train-rows", "1000"]
# What a user's shell would not set; PREFECT_HOME above all, whose default is under test.
UNSET = ("PYTHONPATH", "VIRTUAL_ENV", "PREFECT_HOME", "PREFECT_API_URL", "DIGITS_REGISTRY",
         "DIGITS_DATA", "DIGITS_ARTIFACTS")


@dataclass
class Installed:
    bin: Path
    site: Path  # its site-packages
    project: Path  # the working folder of every command, outside the checkout
    home: Path  # $HOME, so that ~/.prefect would show up here

    def digits(self, *args) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in UNSET} | {"HOME": str(self.home)}
        return subprocess.run(
            [str(self.bin / "digits"), *map(str, args)], cwd=self.project, env=env,
            capture_output=True, text=True, timeout=600,
        )


def purelib(python: Path | str) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    source = copy_sources(root / "source")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = purelib(venv / "bin" / "python")
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-index", "--no-build-isolation", str(source)],
        check=True, capture_output=True, timeout=600,
    )
    shutil.rmtree(source)
    (root / "project").mkdir()
    return Installed(venv / "bin", site, root / "project", root / "home")


def test_the_installed_copy_runs_with_its_package_data(installed):
    assert (installed.site / "digits" / "serving" / "static" / "index.html").is_file()
    assert (installed.site / "digits" / "registry" / "manifest.schema.json").is_file()
    assert (installed.site / "digits" / "checks" / "templates" / "report.html").is_file()
    assert (installed.site / "digits" / "checks" / "templates" / "report.css").is_file()
    shown = installed.digits("--help")
    assert shown.returncode == 0 and "schedule" in shown.stdout and "models" in shown.stdout
    # A traceback names the files that ran: site-packages', not the checkout's.
    failed = installed.digits("--debug", "fetch", "v9", "--dest", "out", "--registry", "none")
    assert str(installed.site / "digits" / "cli" / "registry.py") in failed.stderr
    assert str(REPO / "digits") not in failed.stderr and str(REPO / "flows") not in failed.stderr


def test_a_run_lands_in_the_project_and_its_prefect_home(installed):
    write_dataset(installed.project / "idx")
    images, _ = make_digits(3, 7, make_prototypes())
    np.save(installed.project / "three.npy", images)

    run = installed.digits("run", *FAST, "--data-dir", "idx")  # relative: Path end to end
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("promoted v1 ")
    assert (installed.project / "artifacts" / "registry" / "v1" / "manifest.json").is_file()
    listed = installed.digits("models")
    assert listed.returncode == 0 and listed.stdout.split()[0] == "v1", listed.stderr
    predicted = installed.digits("predict", "three.npy")
    assert predicted.returncode == 0, predicted.stderr
    assert len(predicted.stdout.splitlines()) == 3

    home = installed.project / ".prefect"
    assert (home / "prefect.db").is_file()
    assert not (installed.home / ".prefect").exists()
    [flow_run] = runs_seen_by_a_server(home)
    assert flow_run["state"]["type"] == "COMPLETED"
    assert flow_run["name"].startswith("retrain-mlp-") and set(WEEKLY.tags) <= set(flow_run["tags"])


def runs_seen_by_a_server(home: Path) -> list[dict]:
    """The flow runs a `prefect server` on `home` lists, as `make ui` would show them."""
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    url = f"http://127.0.0.1:{port}/api"
    log = home.parent / "server.log"
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with background(command, env, log) as server:
        wait_for(lambda: answers(f"{url}/health", server, log), 180, f"{url}/health", 0.5)
        response = httpx.post(f"{url}/flow_runs/filter", json={}, timeout=30)
        response.raise_for_status()
        return response.json()
