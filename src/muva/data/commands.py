"""``muva data ...`` commands: look at datasets before training on them."""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(help="Inspect re-ID datasets.", no_args_is_help=True)


@data_app.command("summary")
def summary(
    folder: Path = typer.Argument(..., help="A dataset folder in the Market-1501 layout (bounding_box_train/, query/, bounding_box_test/), or a root holding one."),
    name: str = typer.Option("market1501", "--name", help="Registered dataset name used to parse FOLDER."),
) -> None:
    """Print identities / images / cameras per split of a dataset folder."""
    from rich.console import Console

    from muva.cli import fail
    from muva.data import DatasetError, load_dataset

    try:
        ds = load_dataset(name, folder)
    except (DatasetError, KeyError) as exc:
        raise fail(str(exc).strip('"'))
    Console().print(ds.summary_table())


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
