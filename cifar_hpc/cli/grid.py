"""Inspect grids: what a study will run before it runs."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Inspect the grids in jobs/: the runs a study expands into.", no_args_is_help=True)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Grid name (jobs/NAME.toml) or path to a grid file.")],
    results_dir: Annotated[str, typer.Option(help="Where the runs' folders go.")] = "runs",
) -> None:
    """Print the expanded runs of a grid: count, run ids, and what differs from the baseline."""
    from rich.console import Console

    from cifar_hpc.grid import expand, load_grid, render_runs

    grid = load_grid(name)
    Console(width=200).print(render_runs(grid, expand(grid, results_dir=results_dir)), end="")
