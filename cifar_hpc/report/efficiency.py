"""The study's efficiency: how much of what it held was spent training (``status`` and ``collect``).

``ratio`` = training device-seconds / allocated device-seconds, where

* **training** is every attempt of the completed and failed runs (``result.json``'s ``attempts``):
  its ``train_s`` (training epochs, validation excluded) times its ``devices`` (world size), so a
  run on two GPUs that trains all the time it holds them is 100%, not 50%;
* **allocated** is what Slurm's accounting says (``sacct``, through ``slurm.query_jobs``):
  ``ElapsedRaw`` × GPUs (× nodes on CPU, one task each) of every attempt of every task of the
  study's jobs, so a packed task counts once and a requeued one for each attempt. Runs Slurm has no
  record of (the local executor, a cluster without accounting) count their own wall time × devices.

The mean queue wait is over the task attempts that started (``Start`` − ``Submit``), where Slurm
knows it. Runs still pending or running hold allocation their training does not show yet: the line
says how many. Jobs no run's newest submission points at any more are not asked about, so not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cifar_hpc.cluster.slurm import JobsView
from cifar_hpc.study.recorded import Study
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import RunStatus
from cifar_hpc.training.results import is_number


@dataclass(frozen=True)
class Efficiency:
    train_s: float
    """Device-seconds trained."""
    allocated_s: float
    """Device-seconds allocated (or held: wall time where Slurm has no record)."""
    queue_wait_mean_s: float | None
    source: str
    """``sacct``: Slurm's accounting; ``wall``: the runs' wall time; ``sacct+wall``: both."""
    gpu: bool
    """The devices were GPUs (else CPU processes)."""
    in_progress: int
    """Runs pending or running: their allocation counts, their training not yet."""

    @property
    def ratio(self) -> float | None:
        return self.train_s / self.allocated_s if self.allocated_s > 0 else None

    def to_dict(self) -> dict[str, Any]:
        ratio, wait = self.ratio, self.queue_wait_mean_s
        return {
            "train_s": round(self.train_s, 3),
            "allocated_s": round(self.allocated_s, 3),
            "ratio": None if ratio is None else round(ratio, 4),
            "queue_wait_mean_s": None if wait is None else round(wait, 1),
            "source": self.source,
            "devices": "gpu" if self.gpu else "cpu",
            "in_progress": self.in_progress,
        }


def _attempts(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A result's attempts; a result written before attempts were listed: its sums as one attempt."""
    attempts = [a for a in result.get("attempts") or () if isinstance(a, Mapping)]
    if attempts:
        return attempts
    keys = ("train_s", "wall_s")
    return [{**{k: result.get(k) for k in keys}, "devices": result.get("world_size"), "gpus": result.get("gpu_hours")}]


def _devices(attempt: Mapping[str, Any]) -> float:
    devices = attempt.get("devices")
    return float(devices) if is_number(devices) and devices > 0 else 1.0


COMPUTE_PHASES = ("train_s", "val_s", "test_s")
"""The phases of an attempt's ``timing`` block that are the run's work; start-up (imports, data,
process group, setup) and teardown are not: the first run a process trains pays ~5 s of imports."""


def compute_seconds(result: Mapping[str, Any]) -> float | None:
    """Device-seconds a run spent training and evaluating (``COMPUTE_PHASES`` of each attempt's
    ``timing`` × its devices): what ``cost ×`` compares. An attempt without a block ended before its
    set-up began (no work); a result where none has one was written before it was recorded: None,
    it cannot be compared like with like."""
    attempts = [a for a in result.get("attempts") or () if isinstance(a, Mapping)]
    if not attempts:
        attempts = [{"timing": result.get("timing"), "devices": result.get("world_size")}]
    timed = [a for a in attempts if isinstance(a.get("timing"), Mapping) and is_number(a["timing"].get("train_s"))]
    if not timed:
        return None
    return sum(
        sum(float(a["timing"][k]) for k in COMPUTE_PHASES if is_number(a["timing"].get(k))) * _devices(a) for a in timed
    )


def study_efficiency(study: Study, jobs: JobsView | None, statuses: Iterable[RunStatus]) -> Efficiency | None:
    """The study's efficiency; None while no run has said how long it trained."""
    usage = jobs.usage if jobs is not None else None
    train = wall = 0.0
    measured = gpu = uses_wall = False
    for run in study.runs.values():
        if run.result is None or run.recorded not in (RunState.COMPLETED, RunState.FAILED):
            continue
        attempts = _attempts(run.result)
        for attempt in attempts:
            if is_number(attempt.get("train_s")):
                train += attempt["train_s"] * _devices(attempt)
                measured = True
            gpu = gpu or bool(attempt.get("gpus"))
        if usage is None or run.slurm is None or run.slurm.job not in usage:
            uses_wall = True
            wall += sum(a["wall_s"] * _devices(a) for a in attempts if is_number(a.get("wall_s")))
    if not measured:
        return None
    held = [one for attempts in (usage or {}).values() for one in attempts]
    waits = [one.queue_wait_s for one in held if one.queue_wait_s is not None]
    return Efficiency(
        train_s=train,
        allocated_s=sum(one.elapsed_s * one.devices for one in held) + wall,
        queue_wait_mean_s=sum(waits) / len(waits) if waits else None,
        source="+".join(name for name, used in (("sacct", bool(held)), ("wall", uses_wall)) if used) or "wall",
        gpu=gpu or any(one.gpus for one in held),
        in_progress=sum(1 for s in statuses if s.state.in_progress),
    )


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def _wait(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def efficiency_line(e: Efficiency) -> str:
    """``efficiency: 61% of 1.23 allocated GPU-hours trained (train 0.75 h); queue wait mean 12 s (Slurm)``"""
    unit = "GPU-hours" if e.gpu else "CPU-process-hours"
    if e.ratio is None:
        return "efficiency: unknown (no allocated time recorded yet)"
    held = "allocated " + unit if "sacct" in e.source else unit + " of the runs' wall time"
    text = f"efficiency: {e.ratio:.0%} of {_hours(e.allocated_s)} {held} trained (train {_hours(e.train_s)} h)"
    if e.queue_wait_mean_s is not None:
        text += f"; queue wait mean {_wait(e.queue_wait_mean_s)}"
    if e.source == "sacct":
        text += " (Slurm)"
    elif e.source == "sacct+wall":
        text += " (Slurm, and the wall time of runs it has no record of)"
    if e.in_progress:
        n = e.in_progress
        text += f"; {n} run{'s' * (n > 1)} still in progress, {'their' if n > 1 else 'its'} training not yet counted"
    return text
