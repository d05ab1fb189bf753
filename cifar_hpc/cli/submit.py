"""Submit a grid as Slurm job arrays (or run it on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cifar_hpc.cli.filters import Cells, Models, Seeds, Sets


def submit(
    grid: Annotated[str, typer.Option(help="Grid name (jobs/NAME.toml) or path to a grid file.")],
    profile: Annotated[
        str,
        typer.Option(
            help="Cluster profile (slurm/profiles/NAME.toml) or path; test-cluster: the local Slurm test cluster."
        ),
    ] = "test-cluster",
    executor: Annotated[
        str, typer.Option(help="slurm | local (this machine; the default when no Slurm is found).")
    ] = "auto",
    results_dir: Annotated[Path, typer.Option(help="Studies go to RESULTS_DIR/<grid>/<run_id>/.")] = Path("runs"),
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Resubmit only the runs that failed.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan, the sbatch text, the GPU-hours (expected, worst case) and what would stop a real "
            "submission (as warnings, exit 0); submit and write nothing.",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the study with a progress bar until it ends.")] = False,
    wait_timeout_min: Annotated[float, typer.Option(help="Give up following after this long.")] = 120.0,
    parallel: Annotated[int, typer.Option(help="Local executor: runs at once.")] = 1,
    partition: Annotated[Optional[str], typer.Option(help="Slurm: override the profile's partition.")] = None,
    account: Annotated[Optional[str], typer.Option(help="Slurm: override the profile's account.")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option(help="Slurm: override the profile's GPUs per node.")] = None,
    nodes: Annotated[Optional[int], typer.Option(help="Slurm: override the profile's nodes per run.")] = None,
    time_min: Annotated[Optional[int], typer.Option(help="Slurm: override the profile's time limit (minutes).")] = None,
    array_parallelism: Annotated[
        Optional[int], typer.Option(help="Slurm: tasks of one array running at once (%N).")
    ] = None,
    pack: Annotated[
        Optional[str],
        typer.Option(
            metavar="N|auto",
            help="Slurm: runs per array task, trained one after another in one set of processes (start-up paid once); "
            "auto: as many as fill the time limit, from the study's completed runs. Default: the profile's runs_per_task.",
        ),
    ] = None,
    per_gpu: Annotated[
        int,
        typer.Option(
            help="Slurm: runs sharing one GPU at once, each in its own process (runs on one GPU that do not fill it); "
            "a task then holds at least this many runs.",
        ),
    ] = 1,
    max_array_size: Annotated[
        Optional[int], typer.Option(help="Slurm: split arrays at this size (default: cluster's MaxArraySize).")
    ] = None,
    set_: Sets = None,
    cells: Cells = None,
    models: Models = None,
    seeds: Seeds = None,
) -> None:
    """Submit a grid as Slurm job arrays: skips completed and queued runs, never blocks forever."""
    from cifar_hpc.base.words import counted
    from cifar_hpc.cluster.profiles import load_profile
    from cifar_hpc.study.choose import narrow, reference_notes
    from cifar_hpc.study.grid import load_grid
    from cifar_hpc.submit import launch
    from cifar_hpc.submit.options import SubmitOptions

    say = typer.echo  # plain text: sbatch scripts must never be re-wrapped for the terminal
    options = SubmitOptions(  # first: a flag the executor cannot honour is refused before anything else is read
        executor=executor,
        results_dir=results_dir,
        retry_failed=retry_failed,
        dry_run=dry_run,
        parallel=parallel,
        max_array_size=max_array_size,
        pack=pack,
        per_gpu=per_gpu,
        profile_overrides={
            "partition": partition,
            "account": account,
            "gpus_per_node": gpus_per_node,
            "nodes": nodes,
            "time_min": time_min,
            "array_parallelism": array_parallelism,
            "max_array_size": max_array_size,
        },
    ).resolved()
    chosen_grid = narrow(load_grid(grid), sets=set_ or [], cells=cells, models=models, seeds=seeds)
    prof = load_profile(profile, options.profile_overrides, note=lambda line: typer.echo(line, err=True))
    for note in reference_notes(chosen_grid):
        say(note)
    done = launch.submit(chosen_grid, prof, options, say=say)
    if dry_run:
        return
    if done.executor.trains_here:  # each run's COMPLETED/FAILED line was said as it ended
        outcomes = done.executor.results
        failed = [r for r in outcomes if r.get("status") != "completed"]
        say(f"ran {counted(len(outcomes), 'run')} here: {len(outcomes) - len(failed)} completed, {len(failed)} failed")
        say(f"results: {done.folder}" + (f"  (cifar-hpc logs RUN_ID --results-dir {results_dir})" if failed else ""))
        raise typer.Exit(1 if failed else 0)
    say(f"study: {done.folder}  (cifar-hpc status {done.folder}; cifar-hpc collect {done.folder})")
    if wait:
        from cifar_hpc.report.status import watch

        try:
            submitted = {run_id for job in done.jobs for run_id in job.run_ids}  # one line as each ends
            statuses = watch([done.folder], interval_s=3.0, timeout_s=wait_timeout_min * 60, announce=submitted)
        except TimeoutError as error:
            say(f"stopped following: {error}")
            raise typer.Exit(1) from None
        counts = statuses[0].counts
        say(
            f"study ended: {counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed, "
            f"{counts.get('missing', 0)} missing"
        )
        raise typer.Exit(0 if counts.get("completed", 0) == statuses[0].total else 1)
