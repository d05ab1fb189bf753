"""Submit a grid as Slurm job arrays (or run it on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def submit(
    grid: Annotated[str, typer.Option(help="Grid name (jobs/NAME.toml) or path to a grid file.")],
    profile: Annotated[str, typer.Option(help="Cluster profile (slurm/profiles/NAME.toml) or path.")] = "local",
    executor: Annotated[str, typer.Option(help="slurm | local (this machine; the default when no Slurm is found).")] = "auto",
    results_dir: Annotated[Path, typer.Option(help="Studies go to RESULTS_DIR/<grid>/<run_id>/.")] = Path("runs"),
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Resubmit only the runs that failed.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and the sbatch text; submit nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the study with a progress bar until it ends.")] = False,
    wait_timeout_min: Annotated[float, typer.Option(help="Give up following after this long.")] = 120.0,
    parallel: Annotated[int, typer.Option(help="Local executor: runs at once.")] = 1,
    partition: Annotated[Optional[str], typer.Option(help="Override the profile's partition.")] = None,
    account: Annotated[Optional[str], typer.Option(help="Override the profile's account.")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option(help="Override the profile's GPUs per node.")] = None,
    nodes: Annotated[Optional[int], typer.Option(help="Override the profile's nodes per run.")] = None,
    time_min: Annotated[Optional[int], typer.Option(help="Override the profile's time limit (minutes).")] = None,
    array_parallelism: Annotated[Optional[int], typer.Option(help="Tasks of one array running at once (%N).")] = None,
    max_array_size: Annotated[Optional[int], typer.Option(help="Split arrays at this size (default: cluster's MaxArraySize).")] = None,
) -> None:
    """Submit a grid as Slurm job arrays: skips completed and queued runs, never blocks forever."""
    from cifar_hpc import launch
    from cifar_hpc.data import verify
    from cifar_hpc.errors import UserError
    from cifar_hpc.grid import expand, load_grid
    from cifar_hpc.profiles import load_profile

    say = typer.echo  # plain text: sbatch scripts must never be re-wrapped for the terminal
    if executor not in ("auto", "slurm", "local"):
        raise UserError(f"unknown executor {executor!r}; valid: auto, slurm, local")
    if executor == "auto":
        executor = "slurm" if launch.slurm_available() else "local"
    prof = load_profile(profile, {"partition": partition, "account": account, "gpus_per_node": gpus_per_node,
                                  "nodes": nodes, "time_min": time_min, "array_parallelism": array_parallelism,
                                  "max_array_size": max_array_size})
    study = load_grid(grid)
    runs = launch.absolute_paths(expand(study, results_dir=results_dir))
    if executor == "slurm":
        runs = launch.with_resources(runs, prof)
    for data_dir in sorted({run.config.data.dir for run in runs}):
        verify(data_dir)  # every array task would fail on it: say so once, now
    folder = launch.study_dir(results_dir.resolve(), study)
    states = launch.run_states(runs, folder)
    chosen = launch.select_runs(runs, states, retry_failed=retry_failed)
    counts = {state: list(states.values()).count(state) for state in ("completed", "active", "failed", "new")}
    say(f"grid {study.name}: {len(runs)} runs — {counts['completed']} completed, {counts['active']} queued or "
                  f"running, {counts['failed']} failed, {counts['new']} not yet run; submitting {len(chosen)}"
                  + (" (failed ones)" if retry_failed else ""))
    if counts["failed"] and not retry_failed:
        say(f"{counts['failed']} failed runs are left alone; --retry-failed resubmits them")

    if executor == "local":
        if dry_run:
            for run in chosen:
                say(f"would run {run.run_id} ({run.cell}, {run.config.model}, seed {run.config.seed}) here")
            return
        launch.record_study(folder, study, runs, [{"job_id": None, "array": False, "run_ids": [r.run_id for r in chosen],
                                                   "task_ids": list(range(len(chosen))), "submitted_at": launch.utc_now()}])
        results = launch.run_local(chosen, parallel=parallel)
        failed = [r for r in results if r.get("status") != "completed"]
        say(f"ran {len(results)} runs here: {len(results) - len(failed)} completed, {len(failed)} failed")
        say(f"results: {folder}")
        raise typer.Exit(1 if failed else 0)

    plans = launch.plan_arrays(chosen, prof, max_array_size or launch.cluster_max_array_size()) if chosen else []
    if plans:
        launch.check_cluster(prof, plans)
    gpu_hours = sum(plan.gpu_hours for plan in plans)
    say(f"plan: {len(plans)} array(s), {sum(len(p.runs) for p in plans)} tasks, "
                  f"up to {gpu_hours:.1f} GPU-hours requested (profile {prof.name})")
    if dry_run:
        for index, plan in enumerate(plans):
            say(f"--- array {index}: {len(plan.runs)} tasks, {plan.resources}")
            say(launch.sbatch_text(prof, plan, folder, f"{study.name}-{index}", str(Path.cwd())))
        return
    if plans:
        jobs = launch.submit_slurm(study, plans, prof, folder)
        launch.record_study(folder, study, runs, jobs)
        for job in jobs:
            say(f"submitted array {job['job_id']} ({len(job['run_ids'])} tasks)")
    else:
        launch.record_study(folder, study, runs, [])
    say(f"study: {folder}  (cifar-hpc status {folder}; cifar-hpc collect {folder})")
    if wait:
        from cifar_hpc.status import watch

        try:
            statuses = watch([folder], interval_s=3.0, timeout_s=wait_timeout_min * 60)
        except TimeoutError as error:
            say(f"stopped following: {error}")
            raise typer.Exit(1) from None
        counts = statuses[0].counts
        say(f"study ended: {counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed, "
                      f"{counts.get('missing', 0)} missing")
        raise typer.Exit(0 if counts.get("completed", 0) == statuses[0].total else 1)
