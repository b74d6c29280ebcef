"""Running the HTTP service (digits/serving/app.py builds it) with uvicorn: `digits serve`,
in one process or in several worker processes sharing the port, each loading and following
the model on its own, with Prometheus' multiprocess folder for their metrics."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from digits.config import PRODUCTION_ALIAS
from digits.serving.app import create_app
from digits.serving.metrics import MULTIPROCESS_ENV, forget_dead_workers, multiprocess_folder
from digits.serving.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    LOOPBACK_BINDS,
    SETTINGS_ENV,
    Limits,
    ServeSettings,
    allowed_hosts,
)

log = logging.getLogger(__name__)


def serve(
    registry: Path | str,
    ref: str = PRODUCTION_ALIAS,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: Limits = Limits(),
    log_dir: Path | None = None,
    workers: int = DEFAULT_WORKERS,
    access_log: bool = True,
    cors_origins: Sequence[str] = (),
) -> None:
    """Run the service with uvicorn until interrupted: in this process, or in `workers`
    processes sharing the port, each loading and following the model on its own.
    `access_log`: uvicorn's line per request (~10% of a one-image request's CPU here,
    benchmarks/results.md). `cors_origins`: the origins whose pages may call it."""
    import uvicorn

    # Built here whatever the workers: a bad ref or log folder is one error before any
    # worker starts, not one in each of them.
    app = create_app(registry, ref, limits, hosts=allowed_hosts(host), log_dir=log_dir,
                     cors_origins=cors_origins)
    if host not in LOOPBACK_BINDS:
        log.warning("listening on %s: the service has no authentication", host)
    options: dict[str, Any] = {"host": host, "port": port, "log_config": log_config(),
                               "server_header": False, "access_log": access_log}
    if workers == 1:
        uvicorn.run(app, **options)
        return
    settings = ServeSettings(str(registry), ref, host, limits, str(log_dir) if log_dir else None,
                             tuple(cors_origins))
    with worker_environment(settings):
        uvicorn.run(f"{__name__}:{app_from_env.__name__}", factory=True, workers=workers,
                    **options)


@contextmanager
def worker_environment(settings: ServeSettings) -> Iterator[None]:
    """The settings, and a fresh folder for the workers' metrics, in the environment the
    workers start with; the folder goes when the service stops."""
    saved = {name: os.environ.get(name) for name in (SETTINGS_ENV, MULTIPROCESS_ENV)}
    with tempfile.TemporaryDirectory(prefix="digits-metrics-") as folder:
        os.environ[SETTINGS_ENV] = settings.to_json()
        os.environ[MULTIPROCESS_ENV] = folder
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def app_from_env() -> FastAPI:
    """One worker's app: uvicorn calls this factory in each worker process it starts, with
    `digits serve`'s settings in the environment (worker_environment)."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    folder = multiprocess_folder()
    if folder is not None:
        forget_dead_workers(folder)  # this worker may be the replacement of one that died
    return create_app(settings.registry, settings.ref, settings.limits,
                      hosts=allowed_hosts(settings.host), log_dir=settings.log_dir,
                      cors_origins=settings.cors_origins)


def log_config() -> dict:
    """uvicorn's logging, plus our own `digits.*` lines in the same format."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["digits"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
