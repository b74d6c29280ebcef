"""`digits feedback`: what people said about the service's answers, counted, reviewed
(`review`: suggestions made trusted labels or dismissed), written to a file to look at, or
(`export --add`) checked and added to the batch store as feedback: the one way a batch is
judged as feedback, so the add flow runs from here (flows imported inside, as in
digits/cli/pipeline.py). The tokens that make labels trusted: digits/cli/tokens.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.cli.app import (
    LIBRARY_PANEL,
    LogDirOption,
    ReferenceDirOption,
    RegistryOption,
    StoreOption,
    app,
)
from digits.environment import log_dir_of
from digits.errors import UsageError

feedback_app = typer.Typer(
    help="Count the served answers people corrected or confirmed; review suggestions; export "
    "or add the trusted labels as a batch.",
    pretty_exceptions_enable=False,
)
app.add_typer(feedback_app, name="feedback", rich_help_panel=LIBRARY_PANEL)

SinceOption = Annotated[
    Optional[str],
    typer.Option(show_default="all", help="Only answers given since: a duration back from now "
                 "(30m, 12h, 7d, 2w) or an ISO date or time (UTC unless it says)."),
]


def outer_option(ctx: typer.Context, name: str):
    """The value of option `name` given to a command this one is under (`feedback`)."""
    parent = ctx.parent
    while parent is not None and parent.params.get(name) is None:
        parent = parent.parent
    return None if parent is None else parent.params[name]


def log_folder(ctx: typer.Context, log_dir: Path | None) -> Path:
    return log_dir_of(log_dir or outer_option(ctx, "log_dir"))


def log_window(ctx: typer.Context, log_dir: Path | None, since: str | None):
    """The log folder and start time, from this command's options or else `feedback`'s."""
    from digits.monitoring.since import parse_since

    since = since or outer_option(ctx, "since")
    return log_folder(ctx, log_dir), parse_since(since) if since else None


@feedback_app.callback(invoke_without_command=True)
def feedback(
    ctx: typer.Context,
    log_dir: LogDirOption = None,
    since: SinceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Count answers, trusted corrections and confirmations (what an export takes),
    suggestions pending review or dismissed, and agreement per answered digit."""
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
    out: Annotated[Optional[Path], typer.Option(
        help="An .npz to write the batch to, to look at (`digits add` refuses it).")] = None,
    add: Annotated[bool, typer.Option("--add", help=(
        "Check the batch and add it to the batch store as feedback, or quarantine it (exit 4): "
        "a Prefect flow, as `digits add` (the pipeline extra)."))] = False,
    log_dir: LogDirOption = None,
    since: SinceOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    name: Annotated[str, typer.Option(help="Name of the batch (--add).")] = "feedback",
    store: StoreOption = None,
    reference_dir: ReferenceDirOption = None,
    registry: RegistryOption = None,
) -> None:
    """Write the trusted corrected and confirmed images to a file, or check and add them
    (--add)."""
    if out is None and not add:
        raise UsageError("feedback export: give --out FILE.npz (to read) or --add (into the "
                         "batch store)")
    if out is not None and add:
        # Two reads of a log that may grow between them could differ: the store keeps what
        # was added (`digits data show ID`).
        raise UsageError("feedback export: --out or --add, not both (the batch added is read "
                         "from the log)")
    folder, start = log_window(ctx, log_dir, since)
    if add:
        add_feedback(folder, start, name, store, reference_dir, registry)
        return
    from digits.monitoring.feedback import export_feedback

    typer.echo(export_feedback(folder, out, start, force).line())


def add_feedback(folder: Path, start, name: str, store: Path | None,
                 reference_dir: Path | None, registry: Path | None) -> None:
    """The `add-feedback` flow on the log at `folder`: it reads the log itself, so the
    batch's origin is proved by where it was read, not claimed by a file."""
    from digits.environment import require_pipeline
    from digits.errors import DataError

    require_pipeline("feedback export --add")
    if not folder.is_dir():  # exit 4 before Prefect starts
        raise DataError(f"prediction log {folder} does not exist")
    from flows.launch import run_flow

    _, added = run_flow("flows.add:add_feedback", log_dir=folder.resolve(), since=start,
                        name=name, store_dir=store, reference_dir=reference_dir,
                        registry=registry)
    typer.echo(added.line())


@feedback_app.command("review")
def feedback_review(
    ctx: typer.Context,
    log_dir: LogDirOption = None,
    since: SinceOption = None,
    reviewer: Annotated[Optional[str], typer.Option(
        show_default="$USER", help="Your name: accepted labels are trusted as review:NAME.")
    ] = None,
) -> None:
    """Decide each suggestion awaiting review: accept it, reject it or give another digit;
    accepted ones are trusted labels for the next export."""
    from collections import Counter

    from digits.monitoring.log import PredictionLog
    from digits.monitoring.review import (
        decide,
        pending_suggestions,
        reviewer_credential,
        summary_line,
    )
    from digits.monitoring.rotation import release_labels

    folder, start = log_window(ctx, log_dir, since)
    credential = reviewer_credential(reviewer)
    suggestions = pending_suggestions(folder, start)
    if not suggestions:
        typer.echo("no suggestions await review" + (f" since {start:%Y-%m-%dT%H:%M:%SZ}"
                                                    if start else ""))
        return
    outcomes: Counter = Counter()
    with PredictionLog(folder) as log:
        for number, suggestion in enumerate(suggestions, 1):
            typer.echo("\n".join(suggestion.lines(number, len(suggestions))))
            key = ask_key()
            if key == "q":
                break
            outcomes[decide(log, suggestion, key, credential)] += 1
    release_labels(folder)  # decided, suggestions leave the log; trusted labels wait for export
    typer.echo(summary_line(outcomes, len(suggestions), credential))


def ask_key() -> str:
    """The reviewer's answer, one of review.KEYS; anything else is asked again. (Checked
    here, not by Typer's prompt types, whose handling of choices changed within 0.x.)"""
    from digits.monitoring.review import KEYS, PROMPT

    while True:
        key = typer.prompt(PROMPT).strip().lower()
        if key in KEYS:
            return key
        typer.echo(f"{key[:10]!r} is not one of y, n, 0-9, s, q")
