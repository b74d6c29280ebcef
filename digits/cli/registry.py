"""`digits models`, `fetch`, `verify`, `promote` and `rollback`: the registry's versions and
aliases, read and moved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.cli.app import LIBRARY_PANEL, RegistryOption, app, registry_of
from digits.config import PRODUCTION_ALIAS


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
        for leftover in root.leftovers():  # invisible to readers, so a note, not a failure
            typer.echo(f"note: {leftover}", err=True)
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
