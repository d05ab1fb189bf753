"""Submitting a study: which runs to (re)submit, how they become Slurm job arrays, and the executors.

The flow: ``select_runs`` (skip completed and still-queued runs) → ``plan_arrays`` (group by the
resources a model needs, split at the cluster's MaxArraySize) → ``submit_slurm`` (one submitit
array per plan; each array task runs ``TrainTask`` under ``srun``, one process per GPU) or
``run_local``. Everything that becomes text (sbatch script, container prefix) is a pure function.

Requeue: ``TrainTask`` is submitit-Checkpointable, so on USR2 (preemption, or ``signal_delay_s``
before the time limit) submitit requeues the task with the same config; the run resumes from its
own ``last.ckpt`` (written every epoch) under the same run id and W&B id.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit
from filelock import FileLock

from cifar_hpc.containers import ContainerSpec, container_command
from cifar_hpc.errors import UserError
from cifar_hpc.grid import Grid, Run
from cifar_hpc.profiles import Profile, Resources
from cifar_hpc.results import read_result, write_json_atomic

STUDY_FILE = "study.json"


@dataclass(frozen=True)
class ArrayPlan:
    resources: Resources
    runs: tuple[Run, ...]

    @property
    def gpu_hours(self) -> float:
        """GPU-hours requested: every task holds its GPUs for the whole time limit at most."""
        return len(self.runs) * self.resources.gpus * self.resources.time_min / 60


# --- pure planning --------------------------------------------------------------------------------

def with_resources(runs: list[Run], profile: Profile) -> list[Run]:
    """Give each run the devices and nodes its job will have, refusing a grid that says otherwise.

    DDP under Slurm only forms one process group when the Trainer's ``devices`` equals the tasks
    per node and ``num_nodes`` the nodes: a mismatch hangs or trains alone, so it is refused here.
    """
    placed = []
    for run in runs:
        res = profile.resources_for(run.config.model)
        devices = str(res.tasks_per_node)
        cfg = run.config
        if cfg.devices not in ("auto", devices) or cfg.num_nodes not in (1, res.nodes):
            raise UserError(
                f"cell {run.cell}: the grid asks for devices={cfg.devices}, num_nodes={cfg.num_nodes} but profile "
                f"{profile.name} gives {res.tasks_per_node} task(s) per node on {res.nodes} node(s); they must agree for DDP"
            )
        accelerator = "gpu" if res.gpus_per_node else "cpu"
        placed.append(Run(run.cell, cfg.replace(devices=devices, num_nodes=res.nodes, accelerator=accelerator)))
    return placed


def plan_arrays(runs: list[Run], profile: Profile, max_array_size: int) -> list[ArrayPlan]:
    """Runs grouped by the resources their model needs, each group split into arrays of at most
    ``max_array_size`` tasks (Slurm's MaxArraySize bounds the array index)."""
    limit = min(max_array_size, profile.max_array_size or max_array_size)
    groups: dict[Resources, list[Run]] = {}
    for run in runs:
        groups.setdefault(profile.resources_for(run.config.model), []).append(run)
    return [ArrayPlan(resources, tuple(group[start:start + limit]))
            for resources, group in groups.items() for start in range(0, len(group), limit)]


def container_python(profile: Profile, workdir: str, mounts: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """submitit's ``python`` (the command that starts Python in the profile's container) and extra
    srun arguments, from the one generator that train.sbatch uses too (``cifar_hpc.containers``).

    ``mounts``: folders the job must see besides the profile's binds and the working dir (the
    study's folder with submitit's pickles, the data).
    """
    spec = ContainerSpec(runtime=profile.runtime, image=profile.image, binds=(*profile.binds, workdir, *mounts),
                         workdir=workdir, gpus="job" if profile.resources.gpus_per_node else "none")
    command = container_command(spec, sys.executable if profile.runtime == "none" else "python3")
    return shlex.join(command.prefix), list(command.srun_args)


def executor_parameters(profile: Profile, resources: Resources, job_name: str, workdir: str,
                        mounts: tuple[str, ...] = ()) -> dict[str, Any]:
    """submitit's sbatch parameters for one array (names of submitit's ``_make_sbatch_string``)."""
    _, srun_args = container_python(profile, workdir, mounts)
    params: dict[str, Any] = {
        "job_name": job_name, "partition": profile.partition, "account": profile.account, "qos": profile.qos,
        "constraint": profile.constraint, "nodes": resources.nodes, "ntasks_per_node": resources.tasks_per_node,
        "cpus_per_task": resources.cpus_per_task, "time": resources.time_min,
        "signal_delay_s": profile.signal_delay_s, "array_parallelism": profile.array_parallelism,
        "stderr_to_stdout": True, "setup": list(profile.setup) + ([f"export TMPDIR={shlex.quote(profile.scratch)}"] if profile.scratch else []),
        "additional_parameters": {"requeue": True, **profile.extra_sbatch},
        "srun_args": srun_args,
    }
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if resources.mem_gb is not None:
        params["mem"] = f"{int(resources.mem_gb * 1024)}M"
    return {key: value for key, value in params.items() if value not in (None, [], {})}


def job_mounts(study_folder: Path, runs: list[Run] | tuple[Run, ...]) -> tuple[str, ...]:
    """What a containerised job must see: the study folder (results, submitit's pickles) and the data."""
    return (str(study_folder), *sorted({run.config.data.dir for run in runs}))


def sbatch_text(profile: Profile, plan: ArrayPlan, study_folder: Path, job_name: str, workdir: str) -> str:
    """The exact sbatch script submitit writes for this array (its own pure function, reused here so
    that ``--dry-run`` shows what would really be submitted)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = study_folder / "submitit" / "%j"
    mounts = job_mounts(study_folder, plan.runs)
    python, _ = container_python(profile, workdir, mounts)
    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=len(plan.runs),
                               **executor_parameters(profile, plan.resources, job_name, workdir, mounts))


# --- the study manifest -----------------------------------------------------------------------------

def study_dir(results_dir: Path, grid: Grid) -> Path:
    return results_dir / grid.name


def read_study(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STUDY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def record_study(folder: Path, grid: Grid, runs: list[Run], jobs: list[dict[str, Any]]) -> None:
    """Merge the expected runs and the new jobs into ``study.json`` (under a lock: two submits at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{STUDY_FILE}.lock")):
        study = read_study(folder) or {"schema": 1, "grid": grid.name, "runs": [], "jobs": []}
        study["baseline_cell"] = grid.baseline_cell
        known = {entry["run_id"] for entry in study["runs"]}
        study["runs"] += [{"run_id": r.run_id, "cell": r.cell, "model": r.config.model, "seed": r.config.seed,
                           "out_dir": r.config.out_dir} for r in runs if r.run_id not in known]
        study["jobs"] += jobs
        write_json_atomic(folder / STUDY_FILE, study)


# --- which runs to submit -----------------------------------------------------------------------

def run_states(runs: list[Run], folder: Path) -> dict[str, str]:
    """completed / failed (from result.json), active (queued, running or requeued in Slurm, as
    ``cifar-hpc status`` sees it), else new."""
    from cifar_hpc.collect import IN_PROGRESS, classify_all, load_study
    from cifar_hpc.status import slurm_view

    active: set[str] = set()
    if (folder / STUDY_FILE).exists():
        study = load_study(folder, check_mixing=False)
        active = {s.run.run_id for s in classify_all(study, slurm_view(study)) if s.state in IN_PROGRESS}
    states = {}
    for run in runs:
        result = read_result(Path(run.config.out_dir))
        if result and result.get("run_id") == run.run_id and result.get("status") in ("completed", "failed"):
            states[run.run_id] = result["status"]
        else:
            states[run.run_id] = "active" if run.run_id in active else "new"
    return states


def select_runs(runs: list[Run], states: dict[str, str], *, retry_failed: bool) -> list[Run]:
    """New runs, or with ``retry_failed`` only the failed ones; never completed or active ones."""
    wanted = "failed" if retry_failed else "new"
    return [run for run in runs if states[run.run_id] == wanted]


def slurm_id(job: dict[str, Any], task: int) -> str:
    """Slurm's id of one run's job: ``<array>_<task>``, or the plain job id of a single-run submission."""
    return f"{job['job_id']}_{task}" if job.get("array") else str(job["job_id"])


# --- the cluster ----------------------------------------------------------------------------------

def cluster_max_array_size() -> int:
    out = _slurm(["scontrol", "show", "config"])
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def check_cluster(profile: Profile, plans: list[ArrayPlan]) -> None:
    """Refuse before submitting what Slurm would refuse or hang on: unknown partition, more GPUs per
    node than the partition's nodes have, a time limit over the partition's."""
    partition = profile.partition or _default_partition()
    info = _slurm(["sinfo", "-h", "-p", partition, "-o", "%P|%G|%l"]).strip().splitlines()
    if not info:
        raise UserError(f"partition {partition!r} does not exist on this cluster (sinfo lists it not)")
    _, gres, limit = info[0].split("|")
    offered = max((int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", gres)), default=0)
    max_minutes = _slurm_minutes(limit)
    for plan in plans:
        res = plan.resources
        if res.gpus_per_node > offered:
            raise UserError(f"profile {profile.name} asks for {res.gpus_per_node} GPUs per node; partition {partition} offers {offered}")
        if max_minutes is not None and res.time_min > max_minutes:
            raise UserError(f"profile {profile.name} asks for {res.time_min} min; partition {partition} allows at most {max_minutes}")


def _default_partition() -> str:
    for line in _slurm(["sinfo", "-h", "-o", "%P"]).splitlines():
        if line.endswith("*"):
            return line.rstrip("*")
    raise UserError("no default partition on this cluster: set `partition` in the profile")


def _slurm_minutes(limit: str) -> int | None:
    """Slurm's time-limit text (UNLIMITED, MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in whole minutes."""
    if limit in ("UNLIMITED", "infinite", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, minutes, seconds = 0, parts[0], (parts[1] if len(parts) == 2 else 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _slurm(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise UserError(f"`{command[0]}` not found: no Slurm here (use --executor local to run on this machine)")
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise UserError(f"`{' '.join(command)}` failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


# --- executors ----------------------------------------------------------------------------------

class TrainTask(submitit.helpers.Checkpointable):
    """What each array task runs (in every Slurm task of the job: one per GPU). Checkpointable:
    on preemption or near the time limit submitit requeues it with the same config, and the run
    resumes from its own last checkpoint."""

    def __call__(self, cfg) -> dict[str, Any]:
        from cifar_hpc.train import run

        return run(cfg)


def submit_slurm(grid: Grid, plans: list[ArrayPlan], profile: Profile, folder: Path) -> list[dict[str, Any]]:
    """Submit each plan as one submitit job array; returns the jobs for study.json."""
    workdir = str(Path.cwd())
    jobs = []
    for index, plan in enumerate(plans):
        mounts = job_mounts(folder, plan.runs)
        python, _ = container_python(profile, workdir, mounts)
        executor = submitit.SlurmExecutor(folder=folder / "submitit" / "%j", python=python)
        executor.update_parameters(**executor_parameters(profile, plan.resources, f"{grid.name}-{index}", workdir, mounts))
        with executor.batch():
            submitted = [executor.submit(TrainTask(), run.config) for run in plan.runs]
        # submitit submits a single run as a plain job, not as an array of one
        array_id, is_array = submitted[0].job_id.split("_")[0], len(submitted) > 1
        jobs.append({"job_id": array_id, "array": is_array, "task_ids": list(range(len(plan.runs))),
                     "run_ids": [run.run_id for run in plan.runs], "submitted_at": utc_now(),
                     "log_pattern": str(folder / "submitit" / ("%A_%a/%A_%a_0_log.out" if is_array else "%j/%j_0_log.out"))})
    return jobs


def run_local(runs: list[Run], *, parallel: int = 1) -> list[dict[str, Any]]:
    """Run on this machine, one after another or ``parallel`` at a time. A failing run is reported
    in its result.json and does not stop the others."""
    from cifar_hpc.train import run as train

    if parallel <= 1:
        results = []
        for run in runs:
            try:
                results.append(train(run.config))
            except UserError:
                raise
            except Exception as error:  # noqa: BLE001 - reported per run, the study goes on
                results.append({"run_id": run.run_id, "status": "failed", "error": f"{type(error).__name__}: {error}"})
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(TrainTask(), run.config) for run in runs]
        return [_outcome(future, run) for future, run in zip(futures, runs)]


def _outcome(future, run: Run) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001
        return {"run_id": run.run_id, "status": "failed", "error": f"{type(error).__name__}: {error}"}


def absolute_paths(runs: list[Run]) -> list[Run]:
    """Jobs start elsewhere: data and output paths are made absolute at submission."""
    return [Run(r.cell, r.config.replace(out_dir=str(Path(r.config.out_dir).resolve()),
                                         data=replace(r.config.data, dir=str(Path(r.config.data.dir).resolve()))))
            for r in runs]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slurm_available() -> bool:
    return shutil.which("sbatch") is not None
