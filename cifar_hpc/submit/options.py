"""What a submission is asked to do besides the grid and the profile: ``SubmitOptions``, built by
``cifar-hpc submit``, ``doctor`` and the benchmarks, and read by ``launch.submit``.

Each option is checked on its own here, when it is made; what needs the plan too (``--per-gpu``
against the profile's GPUs per task) is the executor's ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cifar_hpc.base.errors import UserError

EXECUTORS = ("auto", "slurm", "local")


@dataclass(frozen=True, kw_only=True)
class SubmitOptions:
    executor: str = "auto"
    """``slurm`` (job arrays through submitit), ``local`` (this machine), or ``auto``: Slurm when
    ``sbatch`` is found, else this machine."""
    results_dir: Path = Path("runs")
    """Studies go to ``results_dir/<grid>/<run_id>/`` (made absolute at submission)."""
    retry_failed: bool = False
    """Submit only the runs that failed, instead of those never run."""
    dry_run: bool = False
    """Print the plan, each batch's sbatch text, the GPU-hours and the warnings; submit and write
    nothing, take no lock."""
    parallel: int = 1
    """Local executor: runs at once on this machine."""
    max_array_size: int | None = None
    """Split arrays at this many tasks; None: the cluster's MaxArraySize."""
    axes_override: dict[str, list[Any]] | None = None
    """Axes of the grid replaced (``--seeds``); runs they leave unchanged keep their ids, so they are
    found completed or queued and only the new ones are submitted."""
    pack: int | Literal["auto"] | None = None
    """Runs per Slurm task (``cifar_hpc.training.pack``); ``"auto"`` sizes packs from the study's
    completed runs and the time limit; None: the profile's ``runs_per_task``. A string of digits
    (the CLI's ``--pack 3``) becomes its number."""
    per_gpu: int = 1
    """Runs of a Slurm task training side by side on its one GPU; a task then holds at least as many."""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UserError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        object.__setattr__(self, "pack", _pack(self.pack))
        if self.parallel < 1:
            raise UserError(f"--parallel must be >= 1, got {self.parallel}")
        if self.per_gpu < 1:
            raise UserError(f"--per-gpu must be >= 1, got {self.per_gpu}")
        if self.max_array_size is not None and self.max_array_size < 1:
            raise UserError(f"--max-array-size must be >= 1, got {self.max_array_size}")


def _pack(pack: int | str | None) -> int | Literal["auto"] | None:
    """``pack`` as a number, ``"auto"`` or None; ``UserError`` for anything else."""
    if pack is None or pack == "auto":
        return pack
    try:
        size = int(pack)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(pack).strip() != str(size):
        raise UserError(f"--pack must be a whole number >= 1 or 'auto', got {pack!r}")
    return size
