"""`digits reproduce`: retrain a registry version from its manifest, writing nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from digits.cli.app import LIBRARY_PANEL, RegistryOption, app, registry_of
from digits.environment import import_keras_quietly, require_pipeline


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
    from digits.environment import default_store_dir

    require_pipeline("reproduce")
    root = registry_of(registry)
    root.manifest(ref)  # an unknown ref or a bad manifest fails before TensorFlow loads
    import_keras_quietly()
    from digits.model.reproduce import reproduce as retrain_version

    result = retrain_version(root, ref, default_store_dir(), data_dir, log=typer.echo)
    for line in result.lines():
        typer.echo(line)
