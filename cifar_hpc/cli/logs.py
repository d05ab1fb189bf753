"""``cifar-hpc logs RUN_ID [-f]``: a run's log, whichever executor ran it (``cifar_hpc.study.run_logs``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def logs(
    run_id: Annotated[
        str, typer.Argument(help="The run's id, or the start of it when that is unique; STUDY/ID picks one study's.")
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as the log grows, until the run has ended.")
    ] = False,
    results_dir: Annotated[
        Path, typer.Option(help="Where the studies are (runs/, as submit's --results-dir), or one study folder.")
    ] = Path("runs"),
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between looks with --follow.")] = 1.0,
) -> None:
    """Print a run's log: its Slurm task's (only its part of a pack's) or its local train.log.

    Example: cifar-hpc logs 3f2a -f"""
    from cifar_hpc.study import run_logs
    from cifar_hpc.study.run_lookup import find_run

    study, run = find_run(results_dir, run_id)
    log = run_logs.run_log(study, run)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if not follow:
        text = run_logs.Reader(log).new_text(final=True)
        if text:
            write(text)
        else:  # not started (a pack's run waiting its turn has no part of the log yet), or lost
            typer.echo(run_logs.nothing_yet(log, run_logs.current_status(log)))
        return
    try:
        run_logs.follow(log, write, interval_s=interval, say=typer.echo)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
