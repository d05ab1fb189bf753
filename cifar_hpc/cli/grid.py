"""Inspect grids: what a study will run before it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cifar_hpc.cli.filters import Cells, Models, Seeds, Sets

app = typer.Typer(help="Inspect the grids in jobs/: the runs a study expands into.", no_args_is_help=True)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Grid name (jobs/NAME.toml) or path to a grid file.")],
    results_dir: Annotated[
        str,
        typer.Option(help="Where the runs' folders go; where RESULTS_DIR/<grid>/ exists, each run's state is shown."),
    ] = "runs",
    set_: Sets = None,
    cells: Cells = None,
    models: Models = None,
    seeds: Seeds = None,
    print_config: Annotated[
        bool,
        typer.Option("--print-config", help="Print each run's resolved settings as JSON (with its run id) instead."),
    ] = False,
) -> None:
    """Print the expanded runs of a grid: count, run ids, each run's reference cell (vs), what it
    changes against it, and a note where the comparison changes more or less than it says.
    Takes the overrides and filters of `submit`, e.g.: cifar-hpc grid show ablation --cells +swa --seeds 0"""
    import dataclasses
    import json

    from cifar_hpc.study.choose import narrow, reference_notes
    from cifar_hpc.study.grid import expand, load_grid, render_runs, unidentified_data

    grid = narrow(load_grid(name), sets=set_ or [], cells=cells, models=models, seeds=seeds)
    for note in [*grid.notes, *reference_notes(grid)]:
        typer.echo(note, err=True)
    runs = expand(dataclasses.replace(grid, chosen=None), results_dir=results_dir)  # references shown too
    for note in unidentified_data(runs):
        typer.echo(f"warning: {note}", err=True)
    if print_config:
        chosen = [run for run in runs if grid.chosen is None or run.cell in grid.chosen]
        typer.echo(json.dumps([{"run_id": run.run_id, **run.config.to_dict()} for run in chosen], indent=2))
        return
    typer.echo(render_runs(grid, runs, states=_states(Path(results_dir) / grid.name)), nl=False)


def _states(folder: Path) -> dict[str, str] | None:
    """Where each run of the grid's study folder stands, as ``status`` says; None before there is one."""
    from cifar_hpc.study.folders import is_study_folder

    if not folder.is_dir() or not is_study_folder(folder):
        return None
    from cifar_hpc.study.recorded import load_study
    from cifar_hpc.study.states import ask_slurm, classify_all

    study = load_study(folder, check_mixing=False)
    return {status.run.run_id: status.state.plan_word for status in classify_all(study, ask_slurm(study))}


@app.command("list")
def list_() -> None:
    """List every grid in jobs/ (and those shipped with cifar-hpc): name, runs, description."""
    from cifar_hpc.study.choose import list_grids, render_grid_list

    typer.echo(render_grid_list(list_grids()), nl=False)
