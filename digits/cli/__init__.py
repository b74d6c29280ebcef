"""The `digits` command: one Typer app (app.py), a module per group of commands, and the
console script around them (console.py: `main` and `entry`, the `digits` console script).

Importing this package puts all fifteen commands on the app; this is the one place that
imports the command modules, which import app.py and never this package. The library's
commands need no Prefect; the pipeline commands (pipeline.py) import flows, and so
Prefect, inside themselves, so `digits --help` and every other command work where Prefect
is not installed (tests/unit/test_cli.py runs them with `import prefect` failing).

Heavy imports (TensorFlow, FastAPI, Prefect) happen inside commands, after `main` has set
the environment defaults, so `digits --help` is instant and importing this package only
declares the commands. `python -m digits` and `python -m digits.cli` run `entry`.
"""

# Importing a command module adds its commands to the app, and `digits --help` lists them
# in that order within each panel: so these stay unsorted (tests/unit/test_cli.py checks it).
# isort: off
from digits.cli import registry  # noqa: F401  models, fetch, verify, promote, rollback
from digits.cli import serving  # noqa: F401  predict, serve
from digits.cli import data  # noqa: F401  data, data show
from digits.cli import reproduce  # noqa: F401
from digits.cli import feedback  # noqa: F401  feedback, feedback export, feedback review
from digits.cli import tokens  # noqa: F401  feedback tokens add, list, revoke
from digits.cli import pipeline  # noqa: F401  run, tune, schedule, add, drift
# isort: on
from digits.cli.app import app
from digits.cli.console import entry, main

__all__ = ["app", "entry", "main"]
