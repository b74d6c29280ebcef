"""The Great Expectations Data Docs site: the in-memory GX context whose only output is a
site, and the publishing of a freshly built site into the shared one, pruned to the newest
runs. Builds happen in staging folders named `BUILD_PREFIX...` (digits.files), so a killed
run's half-built site is swept, never published.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import great_expectations as gx
from filelock import FileLock
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

BUILD_PREFIX = ".build-"  # a Data Docs site being built; its owner holds `<name>.lock`
SITE_LOCK = ".lock"  # in a site folder: held while one run publishes and prunes


def open_context(site_dir: Path):
    """An in-memory GX context whose only output is the Data Docs site in `site_dir`."""
    site = {"class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(site_dir)}}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),  # no gx/ folder, no temp site
        data_docs_sites={"local": site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # tqdm bars would clutter run logs
    )
    # GX logs every data source it registers at INFO; only its warnings belong in run logs.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    return gx.get_context(project_config=config, mode="ephemeral")


def publish_docs(build: Path, site: Path, keep: int) -> Path:
    """Move a freshly built site into `site`, file by file, then prune it to `keep` runs.

    os.replace swaps each file whole, so readers never see half a page. Runs sharing the
    site take turns under its lock and move index.html last, so the index in place links
    only pages that exist; pruning spares the pages of the run whose index it is.
    """
    site.mkdir(parents=True, exist_ok=True)
    own_runs = {run.relative_to(build) for run in result_runs(build)}
    files = sorted(path for path in build.rglob("*") if path.is_file())
    files.sort(key=lambda path: path == build / "index.html")  # stable: only the index moves
    with FileLock(site / SITE_LOCK):
        for source in files:
            target = site / source.relative_to(build)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        prune_docs(site, keep, spare=own_runs)
    return site / "index.html"


def result_runs(site: Path) -> list[Path]:
    """GX 1.x's folder per validation result: validations/<suite>/<run name>/<UTC run time>."""
    return [run for run in site.glob("validations/*/*/*") if run.is_dir()]


def prune_docs(site: Path, keep: int, spare: set[Path]) -> None:
    """Remove all but the newest `keep` result folders of each suite (and those in `spare`).

    Every run adds one folder per suite, named by its UTC time, so name order is age order.
    Index pages link only their own run's results, so no kept index points at a removed page.
    """
    for suite in {run.parent for run in result_runs(site)}:
        runs = sorted((run for run in suite.iterdir() if run.is_dir()), key=lambda run: run.name)
        for run in runs[:-keep]:
            if run.relative_to(site) not in spare:
                shutil.rmtree(run)
