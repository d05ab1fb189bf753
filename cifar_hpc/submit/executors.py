"""How a batch of runs becomes jobs: one small ``Executor`` interface and its two implementations.

``plan`` groups runs into batches (``cifar_hpc.submit.batch``), ``check`` and ``problems`` say what
makes no plan or would be refused or hang once submitted, ``plan_lines`` what is said of the plan,
``describe`` what ``--dry-run`` prints for a batch, ``submit`` starts a batch and returns its
``JobRecord`` (``cifar_hpc.study.recorded``) for study.json; ``trains_here`` and ``results`` tell
``cifar-hpc submit`` whether the runs have ended when it returns, and how. ``launch.submit`` drives
them and never asks which executor it has.

* ``SlurmArrays``: runs grouped by the resources their model needs, each group split at the
  cluster's MaxArraySize, each batch one submitit job array (a plain job for a single run) whose
  tasks run ``TrainTask`` under ``srun``, one process per GPU, inside the profile's container
  (``cifar_hpc.cluster.containers``). Its dry-run text is the sbatch script of the very submitit executor
  that would submit the batch.
* ``LocalRuns`` (``cifar_hpc.submit.local_runs``): the runs on this machine, one after another or ``parallel`` at a time.

Requeue: ``TrainTask`` is submitit-Checkpointable, so on USR2 (preemption, or ``signal_delay_s``
before the time limit) submitit requeues the task with the same config; the run resumes from its
own ``last.ckpt`` (written every epoch) under the same run id and W&B id. Preemptions requeue without
limit; reaching the time limit does ``profile.max_timeouts`` times (submitit's ``max_num_timeout``,
passed in ``SlurmArrays.executor``), then the task fails with submitit's "timed-out too many times".
Which USR2 is which is submitit's call (``cifar_hpc.cluster.profiles.SUBMITIT_LATE_WINDOW_S``).

Secrets: ``sbatch`` copies the submitter's environment (``--export=ALL``) into the controller's
spool, so ``SlurmArrays.submit`` calls it without ``WITHHELD_FROM_SLURM``; jobs find the W&B key
where W&B looks (``~/.netrc`` from ``wandb login``), not in Slurm's copy of a shell.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Protocol

import submitit

from cifar_hpc.base.errors import UserError
from cifar_hpc.base.words import counted
from cifar_hpc.cluster import slurm
from cifar_hpc.cluster.containers import ContainerSpec, container_command
from cifar_hpc.cluster.image_check import image_problems
from cifar_hpc.cluster.profiles import Profile, Resources
from cifar_hpc.study import code_snapshot
from cifar_hpc.study.manifest import JobRecord
from cifar_hpc.study.plan import PlannedRun
from cifar_hpc.submit.batch import Batch
from cifar_hpc.submit.dry_run import completed_walls, gpu_hours

WITHHELD_FROM_SLURM = ("WANDB_API_KEY",)
"""Variables kept out of the environment ``sbatch`` copies into Slurm's spool (``job.N/environment``,
readable by the cluster's admins, kept until the job is purged): secrets only."""

_environ_lock = threading.Lock()


@contextmanager
def withheld(names: Sequence[str] = WITHHELD_FROM_SLURM) -> Iterator[None]:
    """``names`` removed from ``os.environ`` (which submitit's ``sbatch`` call inherits) for the
    duration, then put back. os.environ is the process's: the lock orders submissions from several
    threads, but another thread that reads one of ``names`` meanwhile (a second or so) misses it."""
    with _environ_lock:
        saved = {name: os.environ.pop(name) for name in names if name in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Executor(Protocol):
    """What ``launch.submit`` (and ``cifar-hpc submit`` after it) asks of an executor; nothing asks
    which executor it is."""

    name: str
    """The executor that study.json records for each job."""
    trains_here: bool
    """True: ``submit`` returns once the batch's runs have ended here, each run's end line said as
    it ended and its outcome in ``results``; False: the runs are queued, for ``status`` and
    ``--wait`` to follow."""

    @property
    def results(self) -> list[dict[str, Any]]:
        """What each run trained here returned (or why it failed), in order; empty when the runs
        were queued."""

    def plan(self, runs: Sequence[PlannedRun]) -> list[Batch]: ...

    def check(self, batches: Sequence[Batch]) -> None:
        """``UserError`` for options that make no plan (a dry run stops on them too)."""

    def problems(self, batches: Sequence[Batch]) -> list[str]:
        """What would be refused or hang once submitted, one line each (``--dry-run`` lists them as
        warnings; a real submission stops on them)."""

    def plan_lines(self, batches: Sequence[Batch], *, dry_run: bool) -> list[str]:
        """What is said of the plan once its runs are chosen: its size, and in a dry run its cost,
        before the batches' ``describe`` texts (the scripts can be long)."""

    def describe(self, batch: Batch, index: int) -> str:
        """What ``--dry-run`` prints for a batch."""

    def submit(self, batch: Batch, index: int) -> JobRecord: ...


def plan_arrays(runs: Sequence[PlannedRun], profile: Profile, max_array_size: int, pack: int = 1) -> list[Batch]:
    """Runs grouped by the resources their model needs, ``pack`` runs per task, each group split into
    arrays of at most ``max_array_size`` tasks (Slurm's MaxArraySize bounds the array index)."""
    limit = min(max_array_size, profile.max_array_size or max_array_size) * pack
    groups: dict[Resources, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(profile.resources_for(run.config.model), []).append(run)
    return [
        Batch(tuple(group[start : start + limit]), resources, pack)
        for resources, group in groups.items()
        for start in range(0, len(group), limit)
    ]


def cluster_problems(profile: Profile, batches: Sequence[Batch], runner: slurm.Runner = slurm.call) -> list[str]:
    """What Slurm would refuse or hang on, one line each: an unknown partition (or a Slurm that
    cannot be asked), more GPUs per node than the partition's nodes have, a time limit over the
    partition's."""
    try:
        offer = slurm.partition(profile.partition, runner)
    except UserError as error:  # SlurmError included: no answer is no plan that can be checked
        return [str(error)]
    found = []
    for res in dict.fromkeys(batch.resources for batch in batches):  # each once, in plan order
        if res.gpus_per_node > offer.gpus_per_node:
            found.append(
                f"profile {profile.name} asks for {res.gpus_per_node} GPUs per node; "
                f"partition {offer.name} offers {offer.gpus_per_node}"
            )
        if offer.max_minutes is not None and res.time_min > offer.max_minutes:
            found.append(
                f"profile {profile.name} asks for {res.time_min} min; "
                f"partition {offer.name} allows at most {offer.max_minutes}"
            )
    return found


def check_cluster(profile: Profile, batches: Sequence[Batch], runner: slurm.Runner = slurm.call) -> None:
    """``cluster_problems``' first problem as a ``UserError`` (``doctor``'s partition check)."""
    found = cluster_problems(profile, batches, runner)
    if found:
        raise UserError(found[0])


def container_python(profile: Profile, workdir: str, mounts: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """submitit's ``python`` (the command that starts Python in the profile's container) and extra
    srun arguments, from the one generator that train.sbatch uses too (``cifar_hpc.cluster.containers``).

    ``mounts``: folders the job must see besides the profile's binds and the working dir (the
    study's folder with submitit's pickles, the data).
    """
    spec = ContainerSpec(
        runtime=profile.runtime,
        image=profile.image,
        binds=(*profile.binds, *([profile.scratch] if profile.scratch else []), workdir, *mounts),
        workdir=workdir,
        gpus="job" if profile.resources.gpus_per_node else "none",
    )
    command = container_command(spec, sys.executable if profile.runtime == "none" else "python3")
    return shlex.join(command.prefix), list(command.srun_args)


def executor_parameters(
    profile: Profile,
    resources: Resources,
    job_name: str,
    workdir: str,
    mounts: tuple[str, ...] = (),
    code: Path | None = None,
) -> dict[str, Any]:
    """submitit's sbatch parameters for one array (the names of ``SlurmExecutor.update_parameters``);
    ``code``: the submission's code snapshot, put first on the jobs' PYTHONPATH (``code_snapshot``)."""
    _, srun_args = container_python(profile, workdir, mounts)
    scratch = [f"export TMPDIR={shlex.quote(profile.scratch)}"] if profile.scratch else []
    scratch += [code_snapshot.python_path_line(code)] if code is not None else []
    params: dict[str, Any] = {
        "job_name": job_name,
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "constraint": profile.constraint,
        "nodes": resources.nodes,
        "ntasks_per_node": resources.tasks_per_node,
        "cpus_per_task": resources.cpus_per_task,
        "time": resources.time_min,
        "signal_delay_s": profile.signal_delay_s,
        "array_parallelism": profile.array_parallelism,
        "stderr_to_stdout": True,
        "setup": list(profile.setup) + scratch,
        "additional_parameters": {"requeue": True, **profile.extra_sbatch},
        # one DDP process dying (an error, a full disk) ends the others at once, instead of leaving
        # them waiting in a collective until the time limit, holding their GPUs
        "srun_args": ["--kill-on-bad-exit=1", *srun_args],
    }
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if resources.mem_gb is not None:
        params["mem"] = f"{int(resources.mem_gb * 1024)}M"
    return {key: value for key, value in params.items() if value not in (None, [], {})}


def job_mounts(study_folder: Path, runs: Sequence[PlannedRun]) -> tuple[str, ...]:
    """What a containerised job must see: the study folder (results, submitit's pickles) and the data."""
    return (str(study_folder), *sorted({run.config.data.dir for run in runs}))


def sbatch_text(executor: submitit.SlurmExecutor, tasks: int) -> str:
    """The exact script ``executor`` submits for ``tasks`` runs: an array for several, a plain job for
    one (submitit makes no array of one). Uses submitit's own (private) text builder the way its array
    submission does; a test pins the result against the script a real submission leaves behind, so a
    change in submitit fails loudly instead of making ``--dry-run`` lie."""
    if tasks > 1:
        array = submitit.SlurmExecutor(executor.folder, executor.max_num_timeout, python=executor.python)
        array.update_parameters(**executor.parameters)
        array.parameters["map_count"] = tasks
        executor = array
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


class TrainTask(submitit.helpers.Checkpointable):
    """What each array task runs (in every Slurm task of the job: one per GPU). Checkpointable:
    on preemption or near the time limit submitit requeues it with the same config, and the run
    resumes from its own last checkpoint."""

    def __call__(self, cfg) -> dict[str, Any]:
        from cifar_hpc.base import console

        console.configure()  # before Lightning is imported (train.run configures again after it)
        from cifar_hpc.training.train import run

        return run(cfg)


class PackTask(submitit.helpers.Checkpointable):
    """An array task that trains several runs one after another (``cifar_hpc.training.pack``), ``per_gpu`` of
    them side by side. Requeued as a whole with the same list: completed runs are skipped, the
    interrupted ones resume."""

    def __init__(self, per_gpu: int = 1) -> None:
        self.per_gpu = per_gpu

    def __call__(self, configs) -> list[dict[str, Any]]:
        from cifar_hpc.base import console

        console.configure()  # before Lightning is imported
        from cifar_hpc.training.pack import run_shared

        return run_shared(configs, self.per_gpu)


@dataclass
class SlurmArrays:
    """Each batch is one submitit job array (a plain job for a single run) on the profile's partition."""

    profile: Profile
    folder: Path
    grid: str
    max_array_size: int | None = None
    """None: the cluster's MaxArraySize (``scontrol show config``)."""
    workdir: str = field(default_factory=lambda: str(Path.cwd()))
    name: str = "slurm"
    pack: int | None = None
    """Runs per task; None: the profile's ``runs_per_task``."""
    per_gpu: int = 1
    """Runs of a task training side by side on its one GPU (``--per-gpu``); a task holds at least as many."""
    trains_here: ClassVar[bool] = False
    _snapshot: Path | None = field(default=None, init=False, repr=False)
    """The code snapshot this submission's jobs import, made at its first ``submit``."""

    def plan(self, runs: Sequence[PlannedRun]) -> list[Batch]:
        if not runs:
            return []
        pack = max(self.pack or self.profile.runs_per_task, self.per_gpu)
        return plan_arrays(runs, self.profile, self.max_array_size or slurm.max_array_size(), pack)

    def check(self, batches: Sequence[Batch]) -> None:
        if self.per_gpu > 1:
            for batch in batches:
                res = batch.resources
                if res.nodes > 1 or res.gpus_per_node > 1:
                    raise UserError(
                        f"--per-gpu {self.per_gpu} shares one GPU between runs: it needs runs on one node with at most "
                        f"one GPU, but profile {self.profile.name} gives {res.nodes} node(s) x {res.gpus_per_node} GPU(s)"
                    )

    def problems(self, batches: Sequence[Batch]) -> list[str]:
        if not batches:
            return []
        profile = self.profile  # an image with another Python or cifar-hpc would fail every task
        image = image_problems(profile.runtime, str(profile.image), profile.setup, self.workdir)
        return [*cluster_problems(profile, batches), *image]

    @property
    def results(self) -> list[dict[str, Any]]:
        return []  # the runs train in Slurm's jobs; status and collect read their results

    def plan_lines(self, batches: Sequence[Batch], *, dry_run: bool) -> list[str]:
        plan = f"plan: {counted(len(batches), 'array')}, {counted(sum(len(b.tasks) for b in batches), 'task')}" + (
            f" of up to {batches[0].pack} runs" if batches and batches[0].pack > 1 else ""
        )
        if not dry_run:
            requested = sum(batch.gpu_hours for batch in batches)
            return [f"{plan}, up to {requested:.1f} GPU-hours requested (profile {self.profile.name})"]
        # a dry run says expected and worst-case GPU-hours on their own line, before the scripts
        cost = gpu_hours(batches, completed_walls(self.folder), self.per_gpu)
        return [f"{plan}, profile {self.profile.name}", cost.line()]

    @property
    def snapshots_code(self) -> bool:
        """The jobs import a copy of the package made at submission (bare metal only: an image has its own)."""
        return self.profile.code_snapshot and self.profile.runtime == "none"

    def executor(self, batch: Batch, index: int, code: Path | None = None) -> submitit.SlurmExecutor:
        """The one executor set-up that both submits and describes a batch (``code``: the snapshot the
        jobs import; a description names the one a submission now would make)."""
        if code is None and self.snapshots_code:
            code = code_snapshot.planned_snapshot(self.folder)
        mounts = job_mounts(self.folder, batch.runs)
        python, _ = container_python(self.profile, self.workdir, mounts)
        # max_num_timeout: how often a run may come back after its time limit (the profile's max_timeouts);
        # submitit writes it into each task's pickle, which every requeued attempt counts down
        executor = submitit.SlurmExecutor(
            folder=self.folder / "submitit" / "%j", max_num_timeout=self.profile.max_timeouts, python=python
        )
        executor.update_parameters(
            **executor_parameters(self.profile, batch.resources, f"{self.grid}-{index}", self.workdir, mounts, code)
        )
        return executor

    def describe(self, batch: Batch, index: int) -> str:
        tasks = len(batch.tasks)
        packed = f" of {batch.pack} runs each" if batch.pack > 1 else ""
        packed += f", {self.per_gpu} at once per GPU" if self.per_gpu > 1 else ""
        res = batch.resources
        each = (
            f"{res.nodes} node(s) x {res.gpus_per_node} GPU(s), {res.cpus_per_task} CPUs per task"
            + (f", {res.mem_gb:g} GB" if res.mem_gb is not None else "")
            + f", {res.time_min} min"
        )
        models = ", ".join(sorted({run.config.model for run in batch.runs}))
        return f"--- array {index}: {counted(tasks, 'task')}{packed} ({models}); each {each}\n" + sbatch_text(
            self.executor(batch, index), tasks
        )

    def submit(self, batch: Batch, index: int) -> JobRecord:
        if self.snapshots_code and self._snapshot is None:  # one copy per submission, however many arrays
            self._snapshot = code_snapshot.snapshot_code(self.folder)
        executor = self.executor(batch, index, self._snapshot)
        with withheld(), executor.batch():  # the batch calls sbatch as it closes, still without the secrets
            if batch.pack > 1:
                jobs = [executor.submit(PackTask(self.per_gpu), [run.config for run in task]) for task in batch.tasks]
            else:
                jobs = [executor.submit(TrainTask(), run.config) for run in batch.runs]
        array = len(jobs) > 1  # submitit submits a single task as a plain job, not as an array of one
        pattern = "%A_%a/%A_%a_0_log.out" if array else "%j/%j_0_log.out"
        return JobRecord(
            run_ids=tuple(run.run_id for run in batch.runs),
            submitted_at=utc_now(),
            job_id=jobs[0].job_id.split("_")[0],
            array=array,
            task_ids=tuple(task for task, runs in enumerate(batch.tasks) for _ in runs),  # a pack's runs share one
            log_pattern=str(self.folder / "submitit" / pattern),
            executor=self.name,
        )
