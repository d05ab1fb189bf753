"""Submitting a study: ``submit()`` does check → select → plan → submit → record, for every caller
(``cifar-hpc submit``, ``doctor``, the benchmarks), each asking through one ``SubmitOptions``
(``cifar_hpc.submit.options``).

* **check**: the whole grid's plan against the data and the cluster (partition, GPUs, time limit),
  each problem one line (``cifar_hpc.submit.dry_run``): a real submission stops on them (exit 2, nothing
  written); ``--dry-run`` lists them as warnings after the plan and exits 0. What makes no plan at all
  (an unknown grid, bad TOML, a layout the profile cannot run, a bad option) is an error either way.
* **select**: the grid's runs, each placed on the resources the profile gives it, minus those the
  one run-state classifier (``cifar_hpc.study.states.classify``) says are completed, still queued or
  running (a retry included), or of unknown state; ``--retry-failed`` takes only the failed ones.
* **plan** / **submit**: an ``Executor`` (``cifar_hpc.submit.executors``: Slurm job arrays through
  submitit, or this machine); what is said of the plan is the executor's (``plan_lines``), never a
  question of which executor it is. ``--dry-run`` describes each batch instead: for Slurm, the
  sbatch text of the very submitit executor that would submit it.
* **record**: ``study.json`` learns the expected runs before anything is submitted, and each job
  right after its submission (``cifar_hpc.study.manifest.record_submission``).

select → submit → record happen under the study's one lock (``study_lock``): six
submits of one grid started together give one job per run; the others wait, then find the runs
queued. ``--dry-run`` takes no lock and writes nothing: it prints the plan, each batch's sbatch
text, the GPU-hours (expected and worst case) and the warnings.

Everything a user can get wrong (grid, profile, data, a layout the partition cannot run) is refused
before the first job is submitted or the first file (the lock's included) written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cifar_hpc.base.errors import UserError
from cifar_hpc.base.words import counted
from cifar_hpc.cluster import slurm
from cifar_hpc.cluster.profiles import Profile
from cifar_hpc.config.train_config import setting_of
from cifar_hpc.study.code_version import submit_notes
from cifar_hpc.study.design import compared_settings, reference_of
from cifar_hpc.study.folders import is_study_folder
from cifar_hpc.study.grid import expand, load_grid, override_axes, run_axes
from cifar_hpc.study.manifest import STUDY_FILE, JobRecord, record_submission
from cifar_hpc.study.plan import Grid, PlannedRun
from cifar_hpc.study.recorded import load_study
from cifar_hpc.study.run_lookup import completed_elsewhere, elsewhere_note
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import ask_slurm, classify
from cifar_hpc.submit.batch import Batch
from cifar_hpc.submit.dry_run import (
    completed_walls,
    data_problems,
    max_array_size_or_default,
    refusal,
    warning_lines,
    writable_problems,
)
from cifar_hpc.submit.executors import Executor, SlurmArrays
from cifar_hpc.submit.local_runs import LocalRuns
from cifar_hpc.submit.options import SubmitOptions
from cifar_hpc.submit.pack_plan import auto_pack_size

LOCK_FILE = f"{STUDY_FILE}.lock"
SOFT_LOCK_FILE = f"{STUDY_FILE}.softlock"
LOCK_TIMEOUT_S = 600.0
"""How long a submit waits for another submit of the same study (a local-executor submit holds the
lock while its runs train) before it gives up with a ``UserError``."""


# --- select -------------------------------------------------------------------------------------


def place_runs(runs: list[PlannedRun], profile: Profile) -> list[PlannedRun]:
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
        placed.append(replace(run, config=cfg.replace(devices=devices, num_nodes=res.nodes, accelerator=accelerator)))
    return placed


def absolute_paths(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Jobs start elsewhere: data and output paths are made absolute at submission."""
    resolve = functools.cache(lambda path: str(Path(path).resolve()))  # a grid has few distinct folders
    placed = []
    for run in runs:
        cfg = run.config
        out_dir, data_dir = str(Path(resolve(str(Path(cfg.out_dir).parent)), run.run_id)), resolve(cfg.data.dir)
        if (out_dir, data_dir) != (cfg.out_dir, cfg.data.dir):  # most grids already give absolute folders
            cfg = cfg.replace(out_dir=out_dir, data=replace(cfg.data, dir=data_dir))
        placed.append(replace(run, config=cfg))
    return placed


def run_states(
    runs: Sequence[PlannedRun], folder: Path, runner: slurm.Runner = slurm.call
) -> dict[str, RunState | None]:
    """Each run's state as ``status`` and ``collect`` see it; None for a run this study never saw."""
    states: dict[str, RunState | None] = {run.run_id: None for run in runs}
    if not is_study_folder(folder):
        return states
    study = load_study(folder, check_mixing=False)
    jobs = ask_slurm(study, runner)
    for run_id in states:
        if run_id in study.runs:
            states[run_id] = classify(study.runs[run_id], jobs).state
    return states


@dataclass(frozen=True)
class Selection:
    runs: tuple[PlannedRun, ...]
    """Every run of the grid."""
    states: dict[str, RunState | None]
    chosen: tuple[PlannedRun, ...]
    """What this submission submits."""
    retry_failed: bool

    def count(self, which: str) -> int:
        """``completed``, ``active`` (queued, running, requeued), ``failed``, ``unknown`` (Slurm could
        not say), or ``new`` (never run, gone, or corrupt)."""
        return sum(_bucket(state) == which for state in self.states.values())

    def summary(self, grid: str, *, dry_run: bool = False) -> str:
        unknown = self.count("unknown")
        return (
            f"grid {grid}: {counted(len(self.runs), 'run')} — {self.count('completed')} completed, {self.count('active')} "
            f"queued or running, {self.count('failed')} failed, {self.count('new')} not yet run"
            + (f", {unknown} of unknown state" if unknown else "")
            + f"; {'would submit' if dry_run else 'submitting'} {len(self.chosen)}"
            + (" (failed ones)" if self.retry_failed else "")
        )


def _bucket(state: RunState | None) -> str:
    if state is RunState.COMPLETED:
        return "completed"
    if state is not None and state.in_progress:
        return "active"
    if state is RunState.FAILED:
        return "failed"
    if state is RunState.UNKNOWN:  # Slurm could not be asked: it may be queued; resubmitting could duplicate it
        return "unknown"
    return "new"  # never submitted, gone without a trace, or corrupt (retrained)


def select(runs: Sequence[PlannedRun], states: dict[str, RunState | None], *, retry_failed: bool) -> Selection:
    """New runs, or with ``retry_failed`` only the failed ones; never completed or active ones."""
    wanted = "failed" if retry_failed else "new"
    chosen = tuple(run for run in runs if _bucket(states[run.run_id]) == wanted)
    return Selection(tuple(runs), states, chosen, retry_failed)


# --- the one submission path ----------------------------------------------------------------------


@contextmanager
def study_lock(
    folder: Path, *, say: Callable[[str], None] = lambda line: None, timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Hold the study's lock for one whole submission: reading where each run stands, submitting,
    recording the jobs. Two submits of one grid started together would otherwise both find a run not
    yet submitted and both submit it. Says once that it waits; ``UserError`` after ``timeout_s``.

    An flock (``study.json.lock``; NFS v4 honours it across nodes); on a filesystem without flock
    (Lustre mounted without ``-o flock``) an O_EXCL marker file (``study.json.softlock``) instead.
    One holder per process: two flocks on one file in one process block each other, so nothing
    called inside takes it again (``record_submission`` doesn't).
    """
    import filelock

    folder.mkdir(parents=True, exist_ok=True)
    try:
        lock = _acquire(filelock.FileLock(str(folder / LOCK_FILE)), folder, say, timeout_s)
    except NotImplementedError:  # filelock's word for "this filesystem has no flock"
        lock = _acquire(filelock.SoftFileLock(str(folder / SOFT_LOCK_FILE)), folder, say, timeout_s)
    try:
        yield
    finally:
        lock.release()


def _acquire(lock: Any, folder: Path, say: Callable[[str], None], timeout_s: float) -> Any:
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
        return lock
    except Timeout:
        say(f"waiting for another submit of {folder} to finish...")
    except OSError as error:
        raise UserError(f"cannot create the lock file {lock.lock_file}: {error}") from None
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise UserError(
            f"another submit of {folder} has held {lock.lock_file} for more than {timeout_s:g} s (a local run "
            "still training, or a killed submit's marker file left behind?); try again when it has finished"
        ) from None
    return lock


def pack_size(
    pack: int | Literal["auto"] | None, profile: Profile, folder: Path, say: Callable[[str], None]
) -> int | None:
    """Runs per task: ``--pack N``, ``--pack auto`` (from the median wall time of the study's
    completed runs and the time limit), or None (the profile's ``runs_per_task``)."""
    if pack != "auto":
        return pack  # a number checked by SubmitOptions, or None
    walls = [wall for values in completed_walls(folder).values() for wall in values]
    time_min = profile.resources.time_min
    size = auto_pack_size(walls, time_min, profile.signal_delay_s)
    if size is None:
        say("--pack auto: no completed run of this study to measure yet; one run per task")
        return 1
    say(
        f"--pack auto: {counted(size, 'run')} per task (median run {sorted(walls)[len(walls) // 2]:.0f} s, time limit {time_min} min)"
    )
    return size


@dataclass
class Submission:
    """What ``submit`` did (or, with ``dry_run``, would do)."""

    grid: Grid
    folder: Path
    selection: Selection
    batches: list[Batch]
    jobs: list[JobRecord]
    executor: Executor
    problems: list[str] = field(default_factory=list)
    """What would stop a real submission (a dry run's warnings; a real one stops on the first)."""

    @property
    def gpu_hours(self) -> float:
        return sum(batch.gpu_hours for batch in self.batches)


def submit(
    grid: str | Grid, profile: Profile, options: SubmitOptions, *, say: Callable[[str], None] = lambda line: None
) -> Submission:
    """check → select → plan → submit → record, the last four under the study's lock. Everything a
    user can get wrong is refused (``UserError``) before the first job is submitted or the first file
    written; ``say`` gets the progress lines (``cifar-hpc submit`` prints them)."""
    options = options.resolved()  # auto made slurm or local; an option that executor cannot honour refused
    kind = options.executor
    grid = grid if isinstance(grid, Grid) else load_grid(grid)
    for line in grid.notes:  # what reading the grid decided for the user (cells another stands for)
        say(line)
    if options.axes_override:
        grid = override_axes(grid, options.axes_override)
    folder, runs = grid_runs(grid, profile, options.results_dir, placed=kind == "slurm")
    if options.dry_run:
        say("dry run: nothing is submitted or written")
    chosen, problems = check(kind, grid, profile, folder, runs, options, say)
    for line in submit_notes(folder):  # the code changed since the study's last submission
        say(line)
    if options.dry_run:  # no lock, nothing written: what a submission would do now
        done = _select_and_plan(grid, folder, runs, chosen, options, say)
        done.problems = problems
        for index, batch in enumerate(done.batches):
            say(chosen.describe(batch, index))
        for line in warning_lines(problems):
            say(line)
        return done
    with study_lock(folder, say=say):  # where runs stand may only be read by the submit that records its jobs
        done = _select_and_plan(grid, folder, runs, chosen, options, say)
        _submit_and_record(done, expected_runs(grid, runs), say)
    return done


def grid_runs(grid: Grid, profile: Profile, results_dir: Path, *, placed: bool) -> tuple[Path, list[PlannedRun]]:
    """The study's folder and every run of the grid with absolute paths; ``placed`` (Slurm): on the
    devices and nodes the profile gives them (``place_runs``)."""
    results_dir = results_dir.resolve()
    runs = absolute_paths(expand(grid, results_dir=results_dir))
    return results_dir / grid.name, place_runs(runs, profile) if placed else runs


def check(
    kind: str,
    grid: Grid,
    profile: Profile,
    folder: Path,
    runs: list[PlannedRun],
    options: SubmitOptions,
    say: Callable[[str], None],
) -> tuple[Executor, list[str]]:
    """The executor of ``kind`` and what would stop a real submission of the whole grid (so that what
    is refused does not depend on what is left); ``UserError`` for what makes no plan at all, in a dry
    run too, and for any problem of a real submission."""
    problems = [*data_problems(runs), *writable_problems(folder)]
    chosen: Executor = (
        SlurmArrays(
            profile,
            folder,
            grid.name,
            options.max_array_size or max_array_size_or_default(problems),
            pack=pack_size(options.pack, profile, folder, say),
            per_gpu=options.per_gpu,
        )
        if kind == "slurm"
        else LocalRuns(options.parallel, say=say)
    )
    whole = chosen.plan(runs)
    chosen.check(whole)
    problems += chosen.problems(whole)
    if problems and not options.dry_run:
        raise UserError(refusal(problems))
    return chosen, problems


def _select_and_plan(
    grid: Grid,
    folder: Path,
    runs: list[PlannedRun],
    chosen: Executor,
    options: SubmitOptions,
    say: Callable[[str], None],
) -> Submission:
    """The runs to submit (``select``) and their batches, each step said."""
    retry_failed = options.retry_failed
    selection = select(runs, run_states(runs, folder), retry_failed=retry_failed)
    say(selection.summary(grid.name, dry_run=options.dry_run))
    elsewhere = completed_elsewhere(folder.parent, [run.run_id for run in selection.chosen], here=folder)
    if elsewhere:  # the same settings done in another study: said, then trained here (a study's results are its own)
        say(elsewhere_note(elsewhere, str(folder)))
    if selection.count("failed") and not retry_failed:
        say(f"{counted(selection.count('failed'), 'failed run')} left alone; --retry-failed resubmits them")
    if selection.count("unknown"):
        say(
            f"{counted(selection.count('unknown'), 'run')} of unknown state left alone: Slurm could not be asked "
            "(cifar-hpc status says why); submit again when it answers"
        )
    done = Submission(grid, folder, selection, chosen.plan(selection.chosen), [], chosen)
    for line in chosen.plan_lines(done.batches, dry_run=options.dry_run):
        say(line)
    return done


def expected_runs(grid: Grid, runs: Sequence[PlannedRun]) -> list[dict[str, Any]]:
    """What study.json learns of every run of the grid before anything is submitted: with ``changes``,
    what its comparison changes (against the reference's run, which ``--cells`` may leave out)."""
    every = runs if grid.chosen is None else expand(replace(grid, chosen=None))
    compared = compared_settings(grid, runs, every)
    return [
        {
            "run_id": r.run_id,
            "cell": r.cell,
            "model": r.config.model,
            "seed": r.config.seed,
            "axes": run_axes(grid, r),  # what makes the run's row, seeds aside (collect reads it)
            "compare_to": reference_of(grid, r.cell),
            "setting": setting_of(r.config.to_dict()),  # what its seeds share: the newest version of a cell
            "out_dir": r.config.out_dir,
            **({"changes": compared[r.run_id]} if r.run_id in compared else {}),
        }
        for r in runs
    ]


def _submit_and_record(done: Submission, expected: list[dict[str, Any]], say: Callable[[str], None]) -> None:
    """The expected runs recorded, then each batch submitted and its job recorded at once. The
    caller holds the study's lock."""
    grid = done.grid
    record_submission(
        done.folder,
        grid=grid.name,
        baseline_cell=grid.baseline_cell,
        runs=expected,
        jobs=[],
        description=grid.description,
        as_defined=not grid.forced,  # a --set submission is a variant of the grid, not what its file defines
    )
    for index, batch in enumerate(done.batches):
        job = done.executor.submit(batch, index)
        record_submission(done.folder, grid=grid.name, baseline_cell=grid.baseline_cell, runs=(), jobs=[job])
        done.jobs.append(job)
        if job.job_id is not None:
            tasks, runs = counted(len(set(job.task_ids)), "task"), counted(len(job.run_ids), "run")
            say(f"submitted array {job.job_id} ({tasks}, {runs})")
