"""What a submission is asked to do besides the grid and the profile: ``SubmitOptions``, built by
``cifar-hpc submit``, ``doctor`` and the benchmarks, and read by ``launch.submit``.

Each option is checked on its own here, when it is made; whether the executor can honour it, once
the executor is known (``resolved``: the same check for ``submit``, ``doctor`` and the benchmarks, so a
flag means the same on both executors or is refused with the reason); what needs the plan too
(``--per-gpu`` against the profile's GPUs per task) is the executor's ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster import slurm

EXECUTORS = ("auto", "slurm", "local")

SLURM_ONLY = {
    "pack": ("--pack", "it sizes Slurm array tasks to pay start-up once; runs here share this process's already"),
    "per_gpu": ("--per-gpu", "it shares a Slurm task's GPU between runs; here --parallel N trains N runs at once"),
    "partition": ("--partition", "it picks a Slurm partition; nothing is submitted here"),
    "account": ("--account", "it names the Slurm account to charge; nothing is submitted here"),
    "gpus_per_node": ("--gpus-per-node", "it asks Slurm for GPUs; runs here train on this machine's own devices"),
    "nodes": ("--nodes", "it asks Slurm for nodes; runs here train on this machine alone"),
    "time_min": ("--time-min", "it is a Slurm job's time limit per attempt; runs here train until they end"),
    "array_parallelism": ("--array-parallelism", "it caps a Slurm array's running tasks; here --parallel N does"),
    "max_array_size": ("--max-array-size", "it splits Slurm job arrays; nothing is submitted here"),
}
"""Options only Slurm job arrays have a meaning for: ``name: (flag, what it does and why not here)``."""
LOCAL_ONLY = {
    "parallel": ("--parallel", "it trains N runs at once on this machine; on Slurm, --array-parallelism N does"),
}
"""Options only the local executor has a meaning for."""


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
    profile_overrides: dict[str, Any] = field(default_factory=dict)
    """Profile values the command line gives (``--time-min``, ``--partition``, ...; None: not given):
    Slurm's only, so checked against the executor with the other options. The caller loads the
    profile with them."""

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
        given = {k: v for k, v in self.profile_overrides.items() if v is not None}
        object.__setattr__(self, "profile_overrides", given)

    def resolved(self) -> SubmitOptions:
        """These options for the executor that runs them: ``auto`` becomes ``slurm`` when ``sbatch``
        is on PATH, else ``local``; ``UserError`` for an option given that this executor cannot honour,
        saying what it is for (one rule for every caller, instead of the local executor ignoring Slurm's
        options and the Slurm one ignoring ``--parallel``)."""
        kind = self.executor if self.executor != "auto" else "slurm" if slurm.available() else "local"
        why = ""
        if self.executor == "auto":
            why = " (chosen: sbatch is on PATH)" if kind == "slurm" else " (chosen: no sbatch on PATH)"
        given = {
            "pack": self.pack,
            "per_gpu": self.per_gpu if self.per_gpu != 1 else None,  # 1: one run per GPU, what local does too
            "parallel": self.parallel if self.parallel != 1 else None,
            "max_array_size": self.max_array_size,
            **self.profile_overrides,
        }
        foreign = SLURM_ONLY if kind == "local" else LOCAL_ONLY
        for name, value in given.items():
            if value is not None and name in foreign:
                flag, reason = foreign[name]
                shown = value if isinstance(value, int) or value == "auto" else repr(value)  # one line, always
                executor = "Slurm" if kind == "slurm" else kind
                raise UserError(f"{flag} {shown} does not apply to the {executor} executor{why}: {reason}")
        return replace(self, executor=kind)


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
