"""``cifar-hpc status``: where each study stands, from its folder and from Slurm (squeue, sacct).

Thin: options in, ``cifar_hpc.report.status`` does the work (``cifar_hpc.report.wandb_io`` for ``sync``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifar_hpc.report.status import render_status, render_status_json, study_status, watch
from cifar_hpc.study.folders import find_studies

app = typer.Typer()


@app.command("status")
def status(
    study_dir: Annotated[Path, typer.Argument(help="A study folder (runs/<grid>/) or a folder of studies.")] = Path(
        "runs"
    ),
    keep_watching: Annotated[
        bool, typer.Option("--watch", help="Refresh with a progress bar until every run has ended.")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between refreshes with --watch.")] = 10.0,
    timeout: Annotated[
        Optional[float], typer.Option(min=0, help="Give up watching after this many seconds (exit 1).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
    runs: Annotated[
        bool,
        typer.Option(
            "--runs",
            help="Also list every run: state, epoch reached, best val acc, attempts, Slurm id, log path "
            "(with --json: a 'runs' list per study).",
        ),
    ] = False,
) -> None:
    """Count each study's runs: completed, failed, running, pending, preempted/requeued, missing."""
    from rich.console import Console

    console = Console()
    studies = find_studies(study_dir)
    if keep_watching:
        try:
            statuses = watch(studies, interval_s=interval, timeout_s=timeout, console=console)
        except TimeoutError as error:
            _show(error.statuses, json_output, console, runs)  # type: ignore[attr-defined]
            typer.echo(f"cifar-hpc: status --watch: {error}", err=True)
            raise typer.Exit(1) from None
    else:
        statuses = [study_status(path) for path in studies]
    _show(statuses, json_output, console, runs)


def _show(statuses, json_output: bool, console, runs: bool) -> None:
    if json_output:
        typer.echo(render_status_json(statuses, runs=runs), nl=False)
    else:
        render_status(statuses, console, runs=runs)


@app.command("sync")
def sync(
    study_dir: Annotated[Path, typer.Argument(help="The study folder, runs/<grid>/.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be pushed; push nothing.")] = False,
    include_synced: Annotated[bool, typer.Option("--include-synced", help="Push runs already synced, again.")] = False,
) -> None:
    """Push a study's offline W&B runs with `wandb sync`, skipping those already synced.

    Covers the training runs and collect's summary run. Run it where there is a network and a W&B login."""
    from cifar_hpc.base.words import counted
    from cifar_hpc.report.wandb_io import offline_runs, sync_study

    todo, skipped, done = sync_study(study_dir, dry_run=dry_run, include_synced=include_synced)
    for run in skipped:
        typer.echo(f"already synced: {run.path}")
    for run in todo:
        typer.echo(f"{'would push' if dry_run else 'pushing'}: {run.path}")
    if not todo:
        typer.echo(f"nothing to push ({len(skipped)} already synced)")
        return
    if done is not None:
        if done.returncode != 0:
            typer.echo(done.stdout + done.stderr, err=True, nl=False)
            raise typer.Exit(1)
        now = {r.path: r.synced for r in offline_runs(study_dir)}
        typer.echo(f"pushed {sum(now.get(r.path, False) for r in todo)} of {counted(len(todo), 'run')}")
