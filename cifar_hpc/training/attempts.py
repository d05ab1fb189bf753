"""Every attempt at a run, so that its cost counts all of them: ``<run>/attempts.json``.

A run may take several attempts: Slurm requeues it (preemption, time limit, node failure), a user
stops it with Ctrl-C and starts it again, a retry follows a failure. Each attempt is one entry:
when it started (the process start, imports included) and ended, on which host and Slurm job, why
it ended, what it trained (seconds, images, epochs) and where its time went (``timing``:
start-up split into its parts, training, validation, test, teardown; ``cifar_hpc.training.timing``).
``result.json`` carries the list and its sums (``wall_s``, ``gpu_hours``, training seconds and
images/s, ``timing`` over every attempt).

An attempt that was killed without a word (SIGKILL, a node that died) cannot close its entry; its
heartbeat (``last_seen``, written every epoch and at most every ``HEARTBEAT_S`` seconds) lets the
next attempt close it as ``lost`` at the last time it was seen alive. Only global rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cifar_hpc.training.results import write_json_atomic

log = logging.getLogger(__name__)

ATTEMPTS_FILE = "attempts.json"
HEARTBEAT_S = 30.0

FIELDS = (
    "imports_s",
    "data_s",
    "process_group_s",
    "setup_s",
    "compile_s",
    "to_first_step_s",
    "train_s",
    "val_s",
    "test_s",
    "teardown_s",
)
"""The fields of an attempt's ``timing`` block (what they measure: ``cifar_hpc.training.timing``)."""


@dataclass
class Attempt:
    started_at: str
    """UTC ISO 8601: when the process started (imports and data loading are part of the cost)."""
    host: str
    slurm_job: str | None = None
    """``<array>_<task>`` or the job id; None outside Slurm."""
    gpus: int = 0
    """GPUs the attempt held (world size on GPUs, 0 on CPU)."""
    devices: int = 1
    """Processes it trained with (the world size: GPUs, or CPU processes); its ``train_s`` and
    ``wall_s`` count once, its device-seconds ``devices`` times (``cifar_hpc.report.efficiency``)."""
    ended_at: str | None = None
    last_seen: str | None = None
    reason: str | None = None
    """Why it ended: ``completed``, ``failed: <error>``, ``terminated (SIGTERM: ...)``,
    ``interrupted (Ctrl-C)``, or ``lost: ...`` for an attempt that could not say."""
    wall_s: float = 0.0
    train_s: float = 0.0
    train_images: int = 0
    epochs_done: int = 0
    timing: dict[str, float | None] | None = None
    """Where its time went (``FIELDS``); None before training set-up began."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Attempt:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass
class AttemptLog:
    """This attempt's entry among the run's earlier ones, kept in ``attempts.json``."""

    path: Path
    current: Attempt
    earlier: list[Attempt] = field(default_factory=list)
    writes: bool = True
    """False on ranks other than 0: they keep the numbers but write nothing."""
    _started: float = 0.0
    _last_write: float = 0.0

    @classmethod
    def begin(cls, out_dir: Path, *, host: str, started: float, writes: bool = True) -> AttemptLog:
        """Read earlier attempts, close one that never said how it ended, and open this one."""
        path = out_dir / ATTEMPTS_FILE
        earlier = [Attempt.from_dict(entry) for entry in _read(path)]
        for attempt in earlier:
            if attempt.ended_at is None:  # killed without a word: count it up to its last heartbeat
                attempt.ended_at = attempt.last_seen or attempt.started_at
                attempt.reason = "lost: no end recorded (killed, or its node failed); counted to its last heartbeat"
                attempt.wall_s = round(max(0.0, _seconds(attempt.started_at, attempt.ended_at)), 3)
        current = Attempt(started_at=_iso(started), host=host, slurm_job=slurm_job())
        log = cls(path, current, earlier, writes, _started=started)
        log.beat(force=True)
        return log

    def beat(
        self,
        *,
        train_s: float | None = None,
        images: int | None = None,
        epochs: int | None = None,
        timing: Callable[[], dict[str, float | None]] | None = None,
        force: bool = False,
    ) -> None:
        """Record progress: every epoch (``force``), else at most every ``HEARTBEAT_S`` seconds; between
        writes it returns at once (it is called after every training batch). ``timing`` is asked
        for the attempt's timing block only when it is written."""
        now = time.time()
        if not force and now - self._last_write < HEARTBEAT_S:
            return
        if timing is not None:
            self.current.timing = timing()
        self._update(now, train_s=train_s, images=images, epochs=epochs)
        self._write()
        self._last_write = now

    def record_timing(self, block: dict[str, float | None]) -> None:
        """This attempt's timing, once it ended (its teardown is measured after the end)."""
        self.current.timing = block
        self._write()

    def end(self, reason: str) -> None:
        if self.current.ended_at is not None:
            return  # the first reason is the real one (an error, then the teardown it caused)
        self._update(time.time())
        self.current.ended_at = self.current.last_seen
        self.current.reason = reason
        self._write()

    def _update(
        self, now: float, *, train_s: float | None = None, images: int | None = None, epochs: int | None = None
    ) -> None:
        if train_s is not None:
            self.current.train_s = round(train_s, 3)
        if images is not None:
            self.current.train_images = images
        if epochs is not None:
            self.current.epochs_done = epochs
        self.current.last_seen = _iso(now)
        self.current.wall_s = round(now - self._started, 3)

    @property
    def all(self) -> list[Attempt]:
        return [*self.earlier, self.current]

    def totals(self) -> dict[str, Any]:
        """The sums ``result.json`` reports: the cost of every attempt, not just the last."""
        attempts = self.all
        train_s = sum(a.train_s for a in attempts)
        images = sum(a.train_images for a in attempts)
        return {
            "wall_s": round(sum(a.wall_s for a in attempts), 3),
            "gpu_hours": round(sum(a.wall_s * a.gpus for a in attempts) / 3600, 6),
            "train_s": round(train_s, 3),
            "train_images_per_s": round(images / train_s, 2) if images and train_s else None,
            "timing": sum_blocks(a.timing for a in attempts),
            "attempts": [asdict(a) for a in attempts],
        }

    def _write(self) -> None:
        if not self.writes:
            return
        try:
            write_json_atomic(self.path, [asdict(a) for a in self.all])
        except OSError as error:  # a full disk must not turn into a failed run here; result.json says more
            log.warning("could not record the attempt in %s: %s", self.path, error.strerror or error)


def stop_kind(error: BaseException, *, sigterm: bool) -> str | None:
    """How an attempt was stopped from outside: ``interrupted`` (Ctrl-C), ``terminated`` (SIGTERM:
    ``sigterm`` is Lightning's word that one arrived), ``exited`` (submitit's exit once it has requeued
    the task after USR2), or None when the run itself failed."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if sigterm or type(error).__name__ == "SIGTERMException":
        return "terminated"
    if isinstance(error, SystemExit):
        return "exited"
    return None


def reason_for(error: BaseException | None, stopped: str | None = None) -> str:
    """Why an attempt ended, in words: ``completed``, or from what stopped it (``stop_kind``)."""
    if error is None:
        return "completed"
    if stopped == "interrupted":
        return "interrupted (Ctrl-C)"
    if stopped == "terminated":
        return "terminated (SIGTERM: cancelled, preempted, requeued or at its time limit)"
    if stopped == "exited":  # submitit exits -1 once it has requeued the task
        code = getattr(error, "code", None)
        return "requeued (USR2: preempted or near its time limit)" if code == -1 else f"exited ({code})"
    return f"failed: {type(error).__name__}: {error}"


def slurm_job() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID")


_process_claimed = False


def attempt_started_at() -> float:
    """When this attempt began: the process start for the first run a process trains (its imports
    are part of the cost), now for any later one (a benchmark or a local batch in one process)."""
    global _process_claimed
    if _process_claimed:
        return time.time()
    _process_claimed = True
    return process_started_at()


def process_started_at(now: Callable[[], float] = time.time) -> float:
    """When this process started (Linux: from /proc), so that imports count in an attempt's cost;
    elsewhere, now. Its age is the boot clock now less its start in clock ticks since boot (10 ms
    resolution; /proc/stat's ``btime`` would add up to a second of error to ``timing.imports_s``)."""
    try:
        ticks = int(Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # AttributeError: no CLOCK_BOOTTIME
        return now()
    # never report a start in the future or days back
    return now() - age if 0 <= age < 7 * 24 * 3600 else now()


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return []  # none yet, or unreadable (then the attempts before it cannot be counted)
    return [e for e in entries if isinstance(e, dict) and "started_at" in e] if isinstance(entries, list) else []


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def failed_in_this_job(result: dict[str, Any] | None, run_id: str) -> bool:
    """``result`` says this run failed in the Slurm job (array task) this process belongs to: a
    requeued job that comes back to a run it already failed (no job: never)."""
    job = slurm_job()
    if not job or not result or result.get("status") != "failed" or result.get("run_id") != run_id:
        return False
    attempts = result.get("attempts")
    return isinstance(attempts, list) and bool(attempts) and (attempts[-1] or {}).get("slurm_job") == job


def sum_blocks(blocks: Iterable[dict[str, Any] | None]) -> dict[str, float | None]:
    """The ``timing`` of several attempts: each field summed over the attempts that measured it."""
    total: dict[str, float | None] = dict.fromkeys(FIELDS)
    for block in blocks:
        for key in FIELDS:
            value = (block or {}).get(key)
            if isinstance(value, (int, float)):
                total[key] = round((total[key] or 0.0) + value, 3)
    return total
