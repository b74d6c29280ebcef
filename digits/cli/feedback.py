"""`digits feedback`: what people said about the service's answers, counted or exported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.cli.app import LIBRARY_PANEL, LogDirOption, app
from digits.config import log_dir_of

feedback_app = typer.Typer(
    help="Count the served answers people corrected or confirmed; export them as a batch.",
    pretty_exceptions_enable=False,
)
app.add_typer(feedback_app, name="feedback", rich_help_panel=LIBRARY_PANEL)

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
