"""The local executor: a study's runs trained on this machine (``submit --executor local``), with the
same interface as the Slurm one (``cifar_hpc.submit.executors.Executor``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from cifar_hpc.base.errors import Interrupted, Terminated, UserError
from cifar_hpc.base.words import counted
from cifar_hpc.study.manifest import JobRecord
from cifar_hpc.study.plan import PlannedRun
from cifar_hpc.submit.batch import Batch
from cifar_hpc.submit.executors import TrainTask


@dataclass
class LocalRuns:
    """The runs on this machine, one after another or ``parallel`` at a time; a failing run is
    reported in its result.json and does not stop the others.

    Before the first run starts, its job (with this process's host, pid and start:
    ``cifar_hpc.cluster.processes``) is added to study.json, so ``status`` shows the runs as pending or
    running while this process lives and as stopped once it does not. Each run writes
    ``<run folder>/train.log`` (``cifar_hpc.study.run_logs``) and gets one line (``run_rows.end_line``)
    through ``say`` as it ends, then one saying where the study stands (``progress_line``)."""

    parallel: int = 1
    name: str = "local"
    results: list[dict[str, Any]] = field(default_factory=list)
    """What each run returned (or why it failed), in order."""
    say: Callable[[str], None] = lambda line: None
    """Gets one line per run as it ends."""
    ended: list[str] = field(default_factory=list)
    """Those lines, in the order the runs ended."""
    walls: list[float | None] = field(default_factory=list)
    """Each ended run's wall seconds (None: not known), for the progress line said after each."""
    failed: int = 0
    """How many of them did not complete."""
    trains_here: ClassVar[bool] = True

    def plan(self, runs: Sequence[PlannedRun]) -> list[Batch]:
        return [Batch(tuple(runs))] if runs else []

    def check(self, batches: Sequence[Batch]) -> None:
        pass  # any plan runs here (``SubmitOptions`` checked ``parallel``)

    def problems(self, batches: Sequence[Batch]) -> list[str]:
        return []  # this machine runs what it is given

    def plan_lines(self, batches: Sequence[Batch], *, dry_run: bool) -> list[str]:
        runs = sum(len(batch.runs) for batch in batches)
        return [f"plan: {counted(runs, 'run')} on this machine, {self.parallel} at a time"] if dry_run else []

    def describe(self, batch: Batch, index: int) -> str:
        return "\n".join(f"would run {run.run_id} {run.label} here" for run in batch.runs)

    def submit(self, batch: Batch, index: int) -> JobRecord:
        from cifar_hpc.cluster.processes import this_process
        from cifar_hpc.study.manifest import STUDY_FILE, record_job
        from cifar_hpc.training.run_folder import output_dir

        me = this_process()
        record = JobRecord(
            run_ids=tuple(run.run_id for run in batch.runs),
            # to the millisecond: a run counts as started in this submission once its config.json is newer
            submitted_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            task_ids=tuple(range(len(batch.runs))),
            executor=self.name,
            host=me.host,
            pid=me.pid,
            process_start=me.start,
        )
        study = output_dir(batch.runs[0].config).parent  # launch.submit puts every run in <study>/<run_id>
        if (study / STUDY_FILE).exists():  # launch.submit recorded the runs (the caller holds the study's lock)
            record_job(study, record)
        self.results += self._run(batch.runs)
        return record

    def _run(self, runs: Sequence[PlannedRun]) -> list[dict[str, Any]]:
        from cifar_hpc.study.run_logs import capture, local_log
        from cifar_hpc.training.run_folder import output_dir

        self.walls, self.failed, total = [], 0, len(runs)
        if self.parallel <= 1:
            outcomes = []
            for run in runs:
                with capture(local_log(output_dir(run.config))) as note:
                    note(f"--- {run.run_id}: an attempt starts (local submit, pid {os.getpid()}) ---")
                    start = time.monotonic()
                    outcome = _outcome(lambda run=run: TrainTask()(run.config), run)
                    note(self._ended(run, outcome, total, time.monotonic() - start))
                outcomes.append(outcome)
            return outcomes
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from cifar_hpc.study.run_logs import forwarded_console, write_line

        context = multiprocessing.get_context("spawn")
        outcomes: dict[str, dict[str, Any]] = {}
        # the workers' console lines on this console (each after its run's id) until the last worker is gone
        with (
            forwarded_console(context) as lines,
            ProcessPoolExecutor(
                max_workers=self.parallel, mp_context=context, initializer=_worker_start, initargs=(lines,)
            ) as pool,
        ):
            futures = {
                pool.submit(train_logged, run.config, str(local_log(output_dir(run.config)))): run for run in runs
            }
            try:
                with _signal_handlers(_raise_stopped, (signal.SIGTERM, signal.SIGHUP)):
                    for future in as_completed(futures):  # each line as its run ends
                        run = futures[future]
                        outcomes[run.run_id] = _outcome(future.result, run)
                        wall = outcomes[run.run_id].get("wall_s")  # the run's own: when a worker began it is not known
                        line = self._ended(
                            run, outcomes[run.run_id], total, wall if isinstance(wall, (int, float)) else None
                        )
                        write_line(local_log(output_dir(run.config)), line)  # its worker is done with the log
            except (KeyboardInterrupt, Interrupted, _Stopped) as stop:
                terminated = isinstance(stop, _Stopped)
                if terminated:  # the runs' own lines will say Ctrl-C: the signal they are sent
                    for future, run in futures.items():
                        if future.running():
                            write_line(
                                local_log(output_dir(run.config)),
                                f"the local submit (pid {os.getpid()}) got {stop}: this run is asked to save its "
                                "step and stop, as on Ctrl-C",
                            )
                _stop_workers(pool)
                left = [run.run_id for run in runs if run.run_id not in outcomes]
                resume = (
                    f"with {counted(len(left), 'run')} not done ({', '.join(left)}); run the same command again to "
                    "go on, each run from its checkpoint (its train.log says where it stopped)"
                )
                if terminated:
                    raise Terminated(f"stopped by {stop} {resume}") from None
                raise Interrupted(f"interrupted by Ctrl-C {resume}") from None
        return [outcomes[run.run_id] for run in runs]

    def _ended(self, run: PlannedRun, outcome: dict[str, Any], total: int, wall: float | None) -> str:
        from cifar_hpc.report.run_rows import end_line_of_result
        from cifar_hpc.study.run_logs import local_log
        from cifar_hpc.training.run_folder import output_dir

        cfg = run.config
        axes = {name: getattr(cfg, name) for name in run.axes}
        line = end_line_of_result(
            run.run_id, run.cell, cfg.model, cfg.seed, outcome, str(local_log(output_dir(cfg))), axes=axes
        )
        self.ended.append(line)
        self.say(line)
        self.walls.append(wall)
        self.failed += outcome.get("status") != "completed"
        if len(self.walls) < total:  # where the study stands; the last run's end is followed by the summary
            self.say(progress_line(total, self.walls, failed=self.failed, parallel=self.parallel))
        return line


def progress_line(total: int, walls: Sequence[float | None], *, failed: int, parallel: int) -> str:
    """``3/8 runs done (1 failed), ~2 min left``: ``walls`` has one entry per ended run (its wall
    seconds, None when unknown); the time left is the mean wall of those known, times the runs left,
    over ``parallel`` (runs in flight are partly done, so no rounding up to whole rounds)."""
    done = len(walls)
    line = f"{done}/{total} runs done" + (f" ({failed} failed)" if failed else "")
    known = [wall for wall in walls if wall is not None]
    if not known or done >= total:
        return line
    left = sum(known) / len(known) * (total - done) / max(parallel, 1)
    return f"{line}, ~{_duration(left)} left"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min"


def _worker_start(lines: Any) -> None:
    """A ``--parallel`` worker: its console to the parent's (``run_logs.forwarded_console``), and its own
    process group, so that a terminal's Ctrl-C (or hang-up) reaches the parent alone, which tells its
    workers (``_stop_workers``): one way in, whether the signal came from a terminal or was sent to the
    command (``kill -INT``, ``timeout``). Ctrl-C is for its runs only (``train_logged``): an idle
    worker would die of it, printing a traceback."""
    from cifar_hpc.study.run_logs import console_to_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setpgid(0, 0)
    console_to_parent(lines)


def train_logged(cfg, log: str) -> dict[str, Any]:
    """A ``--parallel`` worker's run: its output goes to the run's log, its console's lines to the
    parent's console (``run_logs.child_output``); Ctrl-C saves it at the step in flight, as in-process."""
    from cifar_hpc.study.run_logs import child_output

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with child_output(Path(log), cfg.run_id) as note:
            note(f"--- {cfg.run_id}: an attempt starts (local submit --parallel, pid {os.getpid()}) ---")
            return TrainTask()(cfg)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached the parent of ``--parallel`` workers (``kill``, ``timeout``, a closed
    terminal): it stops them as Ctrl-C does rather than dying and leaving them training unwatched.
    Its text is the signal's name."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _Stopped(signal.Signals(signum).name)


@contextmanager
def _signal_handlers(handler: Callable[[int, Any], None], signums: Sequence[int]) -> Iterator[None]:
    """``handler`` for ``signums`` during the block; outside the main thread (which alone may set
    handlers) nothing changes."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def _stop_workers(pool: Any) -> None:
    """After Ctrl-C (or ``_Stopped``): the runs not started are dropped; those in flight are sent
    Ctrl-C (they are in process groups of their own, ``_worker_start``), save their step and stop.
    Wait for them, passing on any further Ctrl-C, SIGTERM or SIGHUP as a second Ctrl-C (the workers
    then stop at once), so that this process does not leave before its workers."""
    import multiprocessing

    def tell_workers(signum: int = signal.SIGINT, frame: Any = None) -> None:
        for worker in multiprocessing.active_children():  # the pool's workers: this process starts no other
            try:
                os.kill(worker.pid, signal.SIGINT)
            except (ProcessLookupError, TypeError):  # gone already, or not started (no pid)
                pass

    tell_workers()
    with _signal_handlers(tell_workers, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)):
        pool.shutdown(wait=True, cancel_futures=True)


def _outcome(result: Callable[[], dict[str, Any]], run: PlannedRun) -> dict[str, Any]:
    try:
        return result()
    except (UserError, Interrupted):  # a mistake, or Ctrl-C: the whole submission stops, not just this run
        raise
    except KeyboardInterrupt:  # before training began (during it, train.run raises Interrupted)
        raise Interrupted(
            f"interrupted by Ctrl-C before training began; run the same command again to start {run.run_id}"
        ) from None
    except Exception as error:  # noqa: BLE001 - reported per run, the study goes on
        return {"run_id": run.run_id, "status": "failed", "error": f"{type(error).__name__}: {error}"}
