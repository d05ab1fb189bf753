"""Inspect grids: what a study will run before it runs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(help="Inspect the grids in jobs/: the runs a study expands into.", no_args_is_help=True)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Grid name (jobs/NAME.toml) or path to a grid file.")],
    results_dir: Annotated[str, typer.Option(help="Where the runs' folders go.")] = "runs",
    seeds: Annotated[Optional[str], typer.Option(help="Replace the grid's seeds: 0-9, 0,3,7 or 0-2,5.")] = None,
) -> None:
    """Print the expanded runs of a grid: count, run ids, each run's reference cell (vs), what it
    changes against it, and a note where the comparison changes more or less than it says."""
    from rich.console import Console

    from cifar_hpc.grid import expand, load_grid, override_axes, parse_seeds, render_runs

    grid = load_grid(name)
    if seeds is not None:
        grid = override_axes(grid, {"seed": parse_seeds(seeds)})
    Console(width=200).print(render_runs(grid, expand(grid, results_dir=results_dir)), end="")
