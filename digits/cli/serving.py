"""`digits predict` and `digits serve`: a registry version answering, here or over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.cli.app import LIBRARY_PANEL, RegistryOption, app, registry_of
from digits.config import PRODUCTION_ALIAS
from digits.environment import LOG_DIR_ENV, muted_stderr
from digits.registry.location import registry_location
from digits.serving.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    Limits,
    check_origin,
)


@app.command(rich_help_panel=LIBRARY_PANEL)
def predict(
    files: Annotated[list[Path], typer.Argument(help="PNG/JPEG images or .npy arrays.")],
    ref: Annotated[str, typer.Option(help="Version or alias.")] = PRODUCTION_ALIAS,
    as_json: Annotated[bool, typer.Option("--json", help=(
        "One JSON object a line: file, digit, probability, probabilities (10), "
        "not_a_digit."))] = False,
    registry: RegistryOption = None,
) -> None:
    """Print file, digit and probability for each image, one line each ("not a digit" and
    the closest digit where the version's rule flags the answer)."""
    from digits.registry.load import load_predictor, predict_files

    # ONNX versions load without TensorFlow; older ones load Keras, whose banner is muted.
    with muted_stderr():
        predictor = load_predictor(ref, registry_of(registry))
    for answer in predict_files(predictor, files):
        typer.echo(json.dumps(answer) if as_json else answer_line(answer))


def answer_line(answer: dict) -> str:
    """A person's line: tab-separated file, digit and probability, or for a flagged answer
    "not a digit" with the closest digit (a machine reads --json)."""
    if answer["not_a_digit"]:
        return (f"{answer['file']}\tnot a digit (closest: {answer['digit']}, "
                f"{answer['probability']:.0%})")
    return f"{answer['file']}\t{answer['digit']}\t{answer['probability']:.4f}"


def check_origins(origins: Optional[list[str]]) -> list[str]:
    """Each --cors-origin as a browser sends it in Origin; a usage error (exit 2) otherwise."""
    try:
        return [check_origin(origin) for origin in origins or ()]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


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
    cors_origin: Annotated[
        Optional[list[str]],
        typer.Option(callback=check_origins, show_default="none: only its own page",
                     help="A web app's origin (scheme://host[:port]) whose pages may call the "
                     "service from a browser: preflights answered, Access-Control-* headers, "
                     "writes allowed. Repeat for more."),
    ] = None,
    registry: RegistryOption = None,
) -> None:
    """Serve predictions, the registry (read-only) and a drawing page over HTTP."""
    from digits.serving.server import serve as run_server

    run_server(registry_location(registry), ref, host, port, Limits(max_body_bytes=max_body_bytes),
               log_dir=log_dir.resolve() if log_dir else None, workers=workers,
               access_log=access_log, cors_origins=tuple(cors_origin or ()))

