"""Where each run of a study stands: one vocabulary (``RunState``) and one classifier (``classify``)
that ``submit``, ``status`` and ``collect`` all use.

**Run states** (``RunState``, decided by ``classify``; ``submit``, ``status`` and ``collect`` all use
it), each run counted once: ``completed``/``failed`` (its ``result.json`` says so), ``corrupt``
(``result.json`` unreadable or half-written: reported, never counted), then, for a run without a
result, from Slurm: ``pending``, ``running``, ``requeued`` (preempted or requeued, waiting to
restart), ``failed`` (the job ended FAILED/TIMEOUT/OUT_OF_MEMORY/CANCELLED/... without writing a
result), ``missing`` (no result and nothing will come: not submitted, or gone from the queue),
``unknown`` (no result and Slurm could not be asked, so it may still be queued or running).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from cifar_hpc import slurm

if TYPE_CHECKING:  # study imports RunState from here
    from cifar_hpc.study import Run, Study


class RunState(str, Enum):
    """Where a run stands. The values are what JSON output and tables show."""

    COMPLETED = "completed"
    FAILED = "failed"
    CORRUPT = "corrupt"
    RUNNING = "running"
    PENDING = "pending"
    REQUEUED = "requeued"
    MISSING = "missing"
    UNKNOWN = "unknown"

    @property
    def in_progress(self) -> bool:
        """Slurm still holds it: queued, running, or waiting to restart."""
        return self in (RunState.PENDING, RunState.RUNNING, RunState.REQUEUED)

    @property
    def ended(self) -> bool:
        """Nothing more will happen to it without a resubmission."""
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CORRUPT, RunState.MISSING)


@dataclass(frozen=True)
class RunStatus:
    run: Run
    state: RunState
    note: str | None = None
    """The error of a failed run, or why the state is what it is."""
    slurm_state: str | None = None


def classify(run: Run, jobs: slurm.JobsView | None) -> RunStatus:
    """A run's state from its folder first, then from what Slurm says about its newest job."""
    if run.recorded is RunState.COMPLETED:
        return RunStatus(run, RunState.COMPLETED)
    if run.recorded is RunState.FAILED:
        return RunStatus(run, RunState.FAILED, str(run.result.get("error") or "failed (no error recorded)"))
    if run.recorded is RunState.CORRUPT:
        return RunStatus(run, RunState.CORRUPT, run.reason)
    started = " (started: config.json written)" if run.started else ""
    if run.slurm is None:  # never submitted, or run by the local executor (which waits for its runs)
        return RunStatus(run, RunState.MISSING, "no result.json" + (started or "; no Slurm job for it"))
    job = run.slurm.job
    if jobs is None or jobs.queue is None:
        return RunStatus(
            run,
            RunState.UNKNOWN,
            f"no result.json{started}; Slurm not asked or not reachable: job {job} may still be queued or running",
        )
    history = jobs.history.get(job, ()) if jobs.history is not None else ()
    requeued_before = any(s in slurm.REQUEUED for s in history[:-1])
    queued = jobs.queue.get(job)
    current = queued or (history[-1] if history else None)
    again = " after a preemption/requeue" if requeued_before else ""
    if current is None:
        if jobs.history is None:
            return RunStatus(
                run,
                RunState.MISSING,
                f"job {job} is not in the queue and wrote no result.json "
                "(no Slurm accounting: cannot say how it ended)",
            )
        return RunStatus(
            run, RunState.MISSING, f"job {job} is neither queued nor in Slurm's accounting; no result.json"
        )
    if current in slurm.REQUEUED and (queued or current != "PREEMPTED"):
        return RunStatus(run, RunState.REQUEUED, f"job {job} {current}", current)
    if current in slurm.PENDING:
        state = RunState.REQUEUED if requeued_before else RunState.PENDING
        return RunStatus(run, state, f"job {job} {current}{again}", current)
    if current in slurm.RUNNING:
        return RunStatus(
            run,
            RunState.RUNNING,
            f"job {job} {current}" + (" (restarted after a requeue)" if requeued_before else ""),
            current,
        )
    if current in slurm.FAILED:
        return RunStatus(run, RunState.FAILED, f"Slurm job {job} ended {current} without writing result.json", current)
    if current == "COMPLETED":
        return RunStatus(run, RunState.MISSING, f"Slurm job {job} COMPLETED but wrote no result.json", current)
    return RunStatus(run, RunState.UNKNOWN, f"job {job} in Slurm state {current}", current)


def ask_slurm(study: Study, runner: slurm.Runner = slurm.call) -> slurm.JobsView | None:
    """What Slurm says about the study's jobs; None when it has none (local executor)."""
    jobs = study.slurm_jobs()
    return slurm.query_jobs(jobs, runner) if jobs else None


def classify_all(study: Study, jobs: slurm.JobsView | None) -> list[RunStatus]:
    return [classify(run, jobs) for run in study.runs.values()]


def count_states(statuses: Iterable[RunStatus]) -> dict[str, int]:
    counts = Counter(s.state for s in statuses)
    return {state.value: counts.get(state, 0) for state in RunState}
