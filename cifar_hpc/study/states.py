"""Where each run of a study stands: one vocabulary (``RunState``) and one classifier (``classify``)
that ``submit``, ``status`` and ``collect`` all use, so "failed" means one thing everywhere.

**Run states**, each run counted once. The newest submission decides:

* ``completed``: its ``result.json`` says so (and holds what a completed run must: ``test_acc``...);
* ``pending``, ``running``, ``requeued`` (preempted or requeued, waiting to restart): its newest Slurm
  job is in the queue, even when an earlier attempt left a failed or corrupt ``result.json`` (a retry);
  for a local submission, its process (``cifar_hpc.cluster.processes``) still lives: running once training
  began (``config.json`` written since the submission), pending before;
* ``failed``: its ``result.json`` says failed (the error: NaN, exception) and no newer job is queued;
  or its newest job ended without writing a result: cancelled, time limit, node failure, out of
  memory, preempted, failed (``ended_reason`` says which, in words);
* ``corrupt``: ``result.json`` unreadable, half-written, or completed without a ``test_acc``:
  reported, never counted, retrained by ``submit``;
* ``missing``: no result and nothing will come: never submitted, gone from the queue, or its local
  submit (``submit --executor local``) was stopped before it ended;
* ``unknown``: no result (or an earlier attempt's) and Slurm could not be asked (or a local submit
  runs it on another host): it may still be queued or training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cifar_hpc.cluster import processes, slurm
from cifar_hpc.study.run_state import RunState
from cifar_hpc.training.results import CONFIG_FILE, RESULT_FILE

if TYPE_CHECKING:  # study imports RunState from here
    from cifar_hpc.study.recorded import RecordedRun, Study


@dataclass(frozen=True)
class RunStatus:
    run: RecordedRun
    state: RunState
    note: str | None = None
    """The error of a failed run, or why the state is what it is."""
    slurm_state: str | None = None


ENDED_WORDS = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "time limit reached",
    "NODE_FAIL": "node failure",
    "OUT_OF_MEMORY": "out of memory",
    "PREEMPTED": "preempted",
    "FAILED": "failed, see its log",
    "BOOT_FAIL": "node failed to boot",
    "DEADLINE": "deadline reached",
    "REVOKED": "revoked",
}
"""What each way a Slurm job can end without a result means, in words."""


def ended_reason(slurm_state: str, *, started: bool) -> str:
    """Why a job that wrote no result ended, in words: ``cancelled before it started``, ``time limit
    reached``... (``started``: this job's attempt began training)."""
    words = ENDED_WORDS.get(slurm_state, slurm_state.lower())
    return words + (" before it started" if slurm_state == "CANCELLED" and not started else "")


def classify(run: RecordedRun, jobs: slurm.JobsView | None) -> RunStatus:
    """A run's state: a completed result, else what Slurm (or, for a local submission, whether its
    process still lives) says about its newest job when that job is still queued or came after the
    run's (failed or corrupt) result, else the result."""
    if run.recorded is RunState.COMPLETED:
        return RunStatus(run, RunState.COMPLETED)
    from_slurm = _from_local(run) if run.local is not None else _from_slurm(run, jobs)
    if run.recorded is None:
        return from_slurm
    if run.recorded is RunState.CORRUPT:
        recorded = RunStatus(run, RunState.CORRUPT, run.reason)
    else:
        recorded = RunStatus(run, RunState.FAILED, _error(run.result or {}))
    if run.slurm is None and run.local is None:  # never submitted (plain `train` runs): the result decides
        return recorded
    if from_slurm.state.in_progress and not _newer_than_newest_job(run):
        # a retry is queued or running: it decides, not the old result (a result written since the
        # job was submitted is that job's own: a run that failed inside a pack still running)
        kind = "failed" if recorded.state is RunState.FAILED else "corrupt"
        return RunStatus(run, from_slurm.state, f"retry of a {kind} run: {from_slurm.note}", from_slurm.slurm_state)
    if not _older_than_newest_job(run):  # the result is the newest job's own
        return recorded
    # the newest job came after this result and ended (or cannot be seen) without writing a new one
    if from_slurm.state is RunState.UNKNOWN:
        return replace(from_slurm, note=f"{from_slurm.note}; {RESULT_FILE} is an earlier attempt's: {recorded.note}")
    before = "the attempt before failed" if recorded.state is RunState.FAILED else f"an earlier attempt's {RESULT_FILE}"
    return replace(recorded, note=f"{from_slurm.note}; {before}: {recorded.note}", slurm_state=from_slurm.slurm_state)


def _error(result: dict) -> str:
    error = str(result.get("error") or "failed (no error recorded)")
    attempts = result.get("attempts")
    return error + (f" (after {len(attempts)} attempts)" if isinstance(attempts, list) and len(attempts) > 1 else "")


def _submitted_at(run: RecordedRun) -> float | None:
    """When the run's newest job (Slurm's or a local submission) was submitted; None: unknown or none."""
    job = run.slurm or run.local
    return job.submitted_at if job is not None else None


def _older_than_newest_job(run: RecordedRun) -> bool:
    """The run's result was written before its newest job was submitted (times unknown: not older)."""
    submitted = _submitted_at(run)
    return submitted is not None and run.result_written is not None and run.result_written < submitted


def _newer_than_newest_job(run: RecordedRun) -> bool:
    """The run's result was written after its newest job was submitted (times unknown: not newer)."""
    submitted = _submitted_at(run)
    return submitted is not None and run.result_written is not None and run.result_written >= submitted


def _started_since_submission(run: RecordedRun) -> bool:
    """Training began (``config.json`` written) in the newest job, not only in an earlier one."""
    submitted = _submitted_at(run)
    if run.config_written is None:
        return False
    return submitted is None or run.config_written >= submitted


def _from_slurm(run: RecordedRun, jobs: slurm.JobsView | None) -> RunStatus:
    """What Slurm says about the run's newest job, as if the run had no result."""
    started = f" (started: {CONFIG_FILE} written)" if run.started else ""
    nothing = f"no {RESULT_FILE}" if run.recorded is None else f"no new {RESULT_FILE}"
    if run.slurm is None:  # never submitted
        return RunStatus(run, RunState.MISSING, nothing + (started or "; no Slurm job for it"))
    job = run.slurm.job
    if jobs is None or jobs.queue is None:
        return RunStatus(
            run,
            RunState.UNKNOWN,
            f"{nothing}{started}; Slurm not asked or not reachable: job {job} may still be queued or running",
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
                f"job {job} is not in the queue and wrote {nothing} (no Slurm accounting: cannot say how it ended)",
            )
        return RunStatus(run, RunState.MISSING, f"job {job} is neither queued nor in Slurm's accounting; {nothing}")
    if current in slurm.REQUEUED and (queued or current != "PREEMPTED"):
        return RunStatus(run, RunState.REQUEUED, f"job {job} {current}", current)
    if current in slurm.PENDING:
        state = RunState.REQUEUED if requeued_before else RunState.PENDING
        return RunStatus(run, state, f"job {job} {current}{again}", current)
    if current in slurm.RUNNING and run.slurm.pack > 1 and not _started_since_submission(run):
        return RunStatus(run, RunState.PENDING, f"waiting in its pack: job {job} is training another run", current)
    if current in slurm.RUNNING:
        return RunStatus(
            run,
            RunState.RUNNING,
            f"job {job} {current}" + (" (restarted after a requeue)" if requeued_before else ""),
            current,
        )
    if current in slurm.FAILED:
        reason = ended_reason(current, started=_started_since_submission(run))
        return RunStatus(run, RunState.FAILED, f"{reason} (Slurm job {job} {current}{again})", current)
    if current == "COMPLETED":
        return RunStatus(run, RunState.MISSING, f"Slurm job {job} COMPLETED but wrote {nothing}", current)
    return RunStatus(run, RunState.UNKNOWN, f"job {job} in Slurm state {current}", current)


def _from_local(run: RecordedRun) -> RunStatus:
    """What a local submission's process says about a run, as if it had no result: the process lives
    (training it, or it waits its turn), ended (stopped before the run ended), or is on another host."""
    local = run.local
    nothing = f"no {RESULT_FILE}" if run.recorded is None else f"no new {RESULT_FILE}"
    started = f" (started: {CONFIG_FILE} written)" if run.started else ""
    if local.process is None:  # recorded before cifar-hpc kept the process: cannot say more than the files
        return RunStatus(run, RunState.MISSING, f"{nothing}{started}; run by a local submit")
    where = f"pid {local.process.pid} on {local.process.host}"
    live = processes.alive(local.process)
    if live is None:
        return RunStatus(run, RunState.UNKNOWN, f"{nothing}; a local submit on another host ({where}) runs it")
    if not live:
        return RunStatus(
            run,
            RunState.MISSING,
            f"{nothing}{started}; the local submit ({where}) ended before it did (Ctrl-C, killed?)",
        )
    if _started_since_submission(run):
        return RunStatus(run, RunState.RUNNING, f"training here ({where})")
    return RunStatus(run, RunState.PENDING, f"waiting its turn in a local submit ({where})")


def ask_slurm(study: Study, runner: slurm.Runner = slurm.call) -> slurm.JobsView | None:
    """What Slurm says about the study's jobs; None when it has none (local executor)."""
    jobs = study.slurm_jobs()
    return slurm.query_jobs(jobs, runner) if jobs else None


def classify_all(study: Study, jobs: slurm.JobsView | None) -> list[RunStatus]:
    return [classify(run, jobs) for run in study.runs.values()]


def count_states(statuses: Iterable[RunStatus]) -> dict[str, int]:
    counts = Counter(s.state for s in statuses)
    return {state.value: counts.get(state, 0) for state in RunState}
