"""What one job runs: a ``Batch`` of planned runs, as every executor plans them
(``cifar_hpc.submit.executors``) and as the dry run counts its GPU-hours (``cifar_hpc.submit.dry_run``)."""

from __future__ import annotations

from dataclasses import dataclass

from cifar_hpc.cluster.profiles import Resources
from cifar_hpc.study.plan import PlannedRun
from cifar_hpc.submit.pack_plan import chunks


@dataclass(frozen=True)
class Batch:
    """What one job (a Slurm array, a plain job, or a local batch) runs."""

    runs: tuple[PlannedRun, ...]
    resources: Resources | None = None
    """What each Slurm task asks for; None on this machine."""
    pack: int = 1
    """Runs per task, trained one after another in one set of processes (``cifar_hpc.training.pack``)."""

    @property
    def tasks(self) -> list[tuple[PlannedRun, ...]]:
        """The runs of each task, in order."""
        return chunks(self.runs, self.pack)

    @property
    def gpu_hours(self) -> float:
        """GPU-hours requested: every task holds its GPUs for the whole time limit at most."""
        res = self.resources
        return len(self.tasks) * res.gpus * res.time_min / 60 if res else 0.0
