"""`digits feedback tokens`: the bearer tokens whose labels the service trusts
(digits.monitoring.tokens): add one (printed once), list them, revoke one."""

from __future__ import annotations

from typing import Annotated

import typer

from digits.cli.app import LogDirOption
from digits.cli.feedback import feedback_app, log_folder

tokens_app = typer.Typer(
    help="The bearer tokens whose labels /v1/feedback trusts, kept hashed in the log folder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
feedback_app.add_typer(tokens_app, name="tokens")

NameArgument = Annotated[str, typer.Argument(
    help="Who holds the token (a person or a client): recorded with every label it gives.")]


@tokens_app.command("add")
def tokens_add(ctx: typer.Context, name: NameArgument, log_dir: LogDirOption = None) -> None:
    """Make a token: printed once on stdout, only its SHA-256 kept."""
    from digits.monitoring.tokens import TOKENS_FILE, add_token

    folder = log_folder(ctx, log_dir)
    typer.echo(add_token(folder, name))
    typer.echo(f"added token {name!r} to {folder / TOKENS_FILE}; it is shown only now: give it "
               "to its holder, who sends `Authorization: Bearer TOKEN` to /v1/feedback",
               err=True)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, log_dir: LogDirOption = None) -> None:
    """The tokens' names, when each was made, and which are revoked."""
    from digits.monitoring.tokens import TOKENS_FILE, list_tokens

    folder = log_folder(ctx, log_dir)
    tokens = list_tokens(folder)
    if not tokens:
        typer.echo(f"no tokens in {folder / TOKENS_FILE}: every label is a suggestion")
    for token in tokens:
        state = "active" if token.active else f"revoked {token.revoked_at}"
        typer.echo(f"{token.name:<20}  made {token.created_at}  {state}")


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, name: NameArgument, log_dir: LogDirOption = None) -> None:
    """Revoke a token: the service refuses it from its next request (401)."""
    from digits.monitoring.tokens import revoke_token

    token = revoke_token(log_folder(ctx, log_dir), name)
    typer.echo(f"revoked {token.name} at {token.revoked_at}: /v1/feedback refuses it from now on")
