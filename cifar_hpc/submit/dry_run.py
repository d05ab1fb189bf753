"""What ``submit --dry-run`` prints besides the sbatch text: the GPU-hours a plan costs and the
problems that would stop a real submission. Functions over the plan and the study's folder
(golden-free, tested on written fixtures); ``launch.submit`` and ``SlurmArrays.plan_lines`` call them.

GPU-hours, two figures:

* **worst case**: every task holds its GPUs for its whole time limit (time limit x GPUs x tasks),
  what the scheduler reserves and the most the study can be charged per attempt;
* **expected**: each run's measured wall time x the GPUs its task holds, the wall time being the
  median of the study's completed runs of the same model (``result.json``'s ``wall_s``, every
  attempt summed). A model with no completed run yet counts at its time limit, and the line says
  which models were measured and which were not.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster import slurm
from cifar_hpc.study.folders import is_study_folder
from cifar_hpc.study.plan import PlannedRun
from cifar_hpc.study.recorded import load_study
from cifar_hpc.study.run_state import RunState
from cifar_hpc.submit.batch import Batch
from cifar_hpc.training.results import check_writable


@dataclass(frozen=True)
class GpuHours:
    worst: float
    expected: float | None
    """None: no run of the study has completed yet, nothing to measure."""
    basis: str
    """Where ``expected`` comes from, in words."""

    def line(self) -> str:
        if self.worst == 0:
            return "GPU-hours: none (the profile asks for no GPUs)"
        expected = f"expected {self.expected:.1f}" if self.expected is not None else "expected: not known yet"
        return f"GPU-hours: {expected} ({self.basis}); worst case {self.worst:.1f} (time limit x GPUs x tasks)"


def gpu_hours(batches: Sequence[Batch], walls: Mapping[str, Sequence[float]], per_gpu: int = 1) -> GpuHours:
    """The plan's GPU-hours from ``walls`` (model -> wall seconds of the study's completed runs).
    ``per_gpu`` runs training side by side on one GPU hold it once."""
    worst = sum(batch.gpu_hours for batch in batches)
    median = {model: statistics.median(values) for model, values in walls.items() if values}
    if not median:
        return GpuHours(worst, None, "no run of this study has completed yet")
    expected, unmeasured = 0.0, set()
    for batch in batches:
        res = batch.resources
        if res is None:
            continue
        for run in batch.runs:
            seconds = median.get(run.config.model)
            if seconds is None:
                unmeasured.add(run.config.model)
                seconds = res.time_min * 60.0
            expected += seconds * res.gpus / 3600 / max(1, per_gpu)
    measured = "; ".join(
        f"{model} {median[model] / 60:.1f} min over {len(walls[model])} runs" for model in sorted(median)
    )
    basis = f"median wall time of this study's completed runs: {measured}"
    if unmeasured:
        basis += f"; {', '.join(sorted(unmeasured))} not measured yet, counted at the time limit"
    return GpuHours(worst, expected, basis)


def completed_walls(folder: Path) -> dict[str, list[float]]:
    """Wall seconds of the study's completed runs (every attempt summed), by model."""
    walls: dict[str, list[float]] = {}
    if is_study_folder(folder):
        for run in load_study(folder, check_mixing=False).runs.values():
            result = run.result or {}
            model = run.model or (result.get("config") or {}).get("model")
            if run.recorded is RunState.COMPLETED and result.get("wall_s") and model:
                walls.setdefault(str(model), []).append(float(result["wall_s"]))
    return walls


def data_problems(runs: Sequence[PlannedRun]) -> list[str]:
    """Each data folder the runs read that is missing or corrupt: every task would fail on it."""
    from cifar_hpc.data.cifar_files import verify

    found = []
    for data_dir in sorted({run.config.data.dir for run in runs}):
        try:
            verify(data_dir)
        except UserError as error:
            found.append(str(error))
    return found


def writable_problems(folder: Path) -> list[str]:
    """The results folder cannot be created or written (nothing is created to find out)."""
    try:
        check_writable(folder, "results dir")
    except UserError as error:
        return [str(error)]
    return []


def max_array_size_or_default(problems: list[str]) -> int:
    """The cluster's MaxArraySize; when Slurm cannot be asked, its default, and a problem noted."""
    try:
        return slurm.max_array_size()
    except slurm.SlurmError as error:
        problems.append(str(error))
        return slurm.DEFAULT_MAX_ARRAY_SIZE


def warning_lines(problems: Sequence[str]) -> list[str]:
    """The dry run's last lines: each problem a real submission would stop on, and what that means."""
    if not problems:
        return []
    return [f"warning: {problem}" for problem in problems] + [
        f"{len(problems)} warning(s): a real submission would stop on {'it' if len(problems) == 1 else 'them'}"
    ]


def refusal(problems: Sequence[str]) -> str:
    """The one line a real submission stops with: the first problem, and how to see the others."""
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem(s); --dry-run lists them all)" if more else "")
