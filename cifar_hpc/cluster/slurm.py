"""The one wrapper around Slurm's client commands (squeue, sacct, sinfo, scontrol).

Every question this project asks Slurm goes through ``call`` (sbatch itself is submitit's), with one
error contract: ``SlurmError`` (a ``UserError``: one line, exit 2 at the CLI) when the command is
not installed, fails, or does not answer within ``TIMEOUT_S``. Callers that can live without an
answer (``status``, ``doctor``) catch it and say what they could not learn; ``submit`` lets it stop
the submission before anything is written.

What Slurm prints is parsed by small pure functions, tested on real output text. ``query_jobs``
takes a ``runner`` so that tests can hand it that text; everything else runs the real commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cifar_hpc.base.errors import UserError

TIMEOUT_S = 30.0
"""No Slurm command may block longer than this: a hung controller must not hang the CLI."""

SQUEUE_ARGS = ("squeue", "-h", "-r", "-o", "%i %T", "-j")
SACCT_ARGS = ("sacct", "-X", "-n", "-P", "-D", "--format=JobID,State,ElapsedRaw,AllocTRES,Submit,Start", "-j")


class SlurmError(UserError):
    """A Slurm command is missing, failed, or gave no answer in time."""

    def __init__(self, message: str, *, missing: bool = False, stderr: str = "") -> None:
        super().__init__(message)
        self.missing = missing
        """The command is not installed here (no Slurm), as opposed to failing."""
        self.stderr = stderr


Runner = Callable[[Sequence[str]], str]
"""Runs one Slurm command and returns its stdout, or raises ``SlurmError``."""


def call(args: Sequence[str], *, timeout_s: float = TIMEOUT_S) -> str:
    """Run one Slurm client command; its stdout, or ``SlurmError`` saying why not."""
    exe = shutil.which(args[0])
    if exe is None:
        raise SlurmError(f"`{args[0]}` not found: no Slurm here (--executor local runs on this machine)", missing=True)
    try:
        done = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(args)}` gave no answer within {timeout_s:.0f} s (is slurmctld up?)") from None
    except OSError as error:
        raise SlurmError(f"`{' '.join(args)}` could not run: {error}") from None
    if done.returncode != 0:
        message = _first_line(done.stderr) if done.stderr.strip() else _first_line(done.stdout)
        raise SlurmError(f"`{' '.join(args)}` failed: {message}", stderr=done.stderr)
    return done.stdout


def available() -> bool:
    """Slurm's submission command is on PATH (the ``auto`` executor's rule)."""
    return shutil.which("sbatch") is not None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")


# --- the cluster --------------------------------------------------------------------------------

DEFAULT_MAX_ARRAY_SIZE = 1001
"""Slurm's default MaxArraySize."""


def this_job() -> str | None:
    """The Slurm job this process runs in, as ``scontrol`` names it (``<array>_<task>`` for an array
    task); None outside Slurm."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue(job_id: str, runner: Runner = call) -> None:
    """Put ``job_id`` back in the queue (``scontrol requeue``; the job needs ``--requeue``)."""
    runner(["scontrol", "requeue", job_id])


def max_array_size(runner: Runner = call) -> int:
    """``MaxArraySize`` from ``scontrol show config``: it bounds the array *index*, not the task count."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", runner(["scontrol", "show", "config"]), re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def ping(runner: Runner = call) -> None:
    """Raise ``SlurmError`` unless the controller answers UP."""
    out = runner(["scontrol", "ping"])
    if "UP" not in out:
        raise SlurmError(f"controller not reachable: {' '.join(out.split())}")


def accounting_on(runner: Runner = call) -> bool:
    """``sacct`` answers (slurmdbd runs): without it a job killed outside Python looks missing, not failed."""
    try:
        runner(["sacct", "-n", "-X", "-S", "now", "--format=JobID"])
    except SlurmError:
        return False
    return True


@dataclass(frozen=True)
class Partition:
    name: str
    gpus_per_node: int
    """The most GPUs (``gres gpu``) one node of the partition offers."""
    max_minutes: int | None
    """Its time limit in minutes; None: unlimited."""


def default_partition(runner: Runner = call) -> str:
    for line in runner(["sinfo", "-h", "-o", "%P"]).splitlines():
        if line.endswith("*"):
            return line.rstrip("*")
    raise UserError("no default partition on this cluster: set `partition` in the profile")


def partition(name: str | None, runner: Runner = call) -> Partition:
    """What a partition (or the default one) offers; ``UserError`` when it does not exist."""
    name = name or default_partition(runner)
    lines = runner(["sinfo", "-h", "-p", name, "-o", "%P|%G|%l"]).strip().splitlines()
    if not lines:
        raise UserError(f"partition {name!r} does not exist on this cluster (sinfo lists it not)")
    return parse_partition(lines, name)


def parse_partition(lines: Sequence[str], name: str) -> Partition:
    """``sinfo -o %P|%G|%l`` lines (one per node group) -> the partition's best offer."""
    gpus, limit = 0, None
    for line in lines:
        _, gres, limit = line.split("|")
        gpus = max([gpus, *(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", gres))])
    return Partition(name, gpus, slurm_minutes(limit or ""))


def slurm_minutes(limit: str) -> int | None:
    """Slurm's time-limit text (UNLIMITED, MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in whole minutes."""
    if limit in ("UNLIMITED", "infinite", "n/a", ""):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, minutes, seconds = 0, parts[0], (parts[1] if len(parts) == 2 else 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


# --- jobs: what squeue and sacct say --------------------------------------------------------------

# Slurm job states (squeue %T / sacct State), grouped by what they mean for a run without a result.
PENDING = frozenset({"PENDING", "CONFIGURING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"})
REQUEUED = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "SUSPENDED", "SPECIAL_EXIT"})
FAILED = frozenset(
    {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}
)


@dataclass(frozen=True)
class JobsView:
    """What Slurm said about a set of jobs (``query_jobs``)."""

    queue: Mapping[str, str] | None
    """Slurm job id (``1234_5``) -> ``squeue`` state, for jobs still queued or running; None: squeue
    could not be asked (not installed, controller down)."""
    history: Mapping[str, tuple[str, ...]] | None = None
    """Slurm job id -> ``sacct`` states, oldest attempt first (a requeued job has several); None:
    no accounting, so how a job that left the queue ended is unknown."""
    notes: tuple[str, ...] = ()
    """What could not be known, in words."""
    usage: Mapping[str, tuple[JobUsage, ...]] | None = None
    """Slurm job id -> what each of its attempts held (``sacct``), oldest first; None: no accounting."""


@dataclass(frozen=True)
class JobUsage:
    """One attempt of a job as Slurm's accounting has it (``parse_usage``)."""

    elapsed_s: int
    """``ElapsedRaw``: seconds it has held its allocation (so far, while it runs; 0 while it pends)."""
    gpus: int
    """GPUs allocated (``gres/gpu`` in ``AllocTRES``)."""
    devices: int
    """What it trained on: its GPUs, else its nodes (on CPU the profiles start one task per node)."""
    queue_wait_s: float | None
    """``Start`` less ``Submit`` (a requeued attempt: since its requeue); None until it starts."""


_ARRAY = re.compile(r"^(?P<job>\d+)_\[(?P<spec>[^\]]*)\]$")


def expand_job_ids(token: str) -> list[str]:
    """``1234_[0-2,5%4]`` -> ``1234_0 1234_1 1234_2 1234_5`` (``%4`` is the throttle); others as they are."""
    match = _ARRAY.match(token)
    if not match:
        return [token]
    spec = match["spec"].split("%")[0]
    out = []
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        step = 1
        if ":" in last:
            last, step_text = last.split(":")
            step = int(step_text)
        out += [f"{match['job']}_{i}" for i in range(int(first), int(last or first) + 1, step)]
    return out


def _state_word(text: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``COMPLETED+`` -> ``COMPLETED``."""
    return text.strip().split(" ")[0].rstrip("+").upper()


def parse_squeue(text: str) -> dict[str, str]:
    """``squeue -h -r -o "%i %T"`` output -> job id -> state."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0][:1].isdigit():
            continue
        for job in expand_job_ids(parts[0]):
            out[job] = _state_word(parts[1])
    return out


def parse_sacct(text: str) -> dict[str, tuple[str, ...]]:
    """``sacct -X -n -P -D --format=JobID,State[,...]`` output -> job id -> states, in the order
    printed (oldest attempt first)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        job, sep, state = line.strip().partition("|")
        if not sep or not job[:1].isdigit() or not state.strip():
            continue
        for one in expand_job_ids(job):
            out.setdefault(one, []).append(_state_word(state.split("|")[0]))
    return {job: tuple(states) for job, states in out.items()}


def parse_usage(text: str) -> dict[str, tuple[JobUsage, ...]]:
    """``sacct -X -n -P -D --format=JobID,State,ElapsedRaw,AllocTRES,Submit,Start`` output -> job id
    -> each attempt's ``JobUsage``, oldest first (lines without these fields are skipped)."""
    out: dict[str, list[JobUsage]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 6 or not fields[0][:1].isdigit() or not fields[2].strip().isdigit():
            continue
        tres = dict(item.split("=", 1) for item in fields[3].split(",") if "=" in item)
        gpus = int(tres.get("gres/gpu", "0") or 0)
        usage = JobUsage(
            elapsed_s=int(fields[2]),
            gpus=gpus,
            devices=gpus or int(tres.get("node", "1") or 1),
            queue_wait_s=_seconds_between(fields[4], fields[5]),
        )
        for one in expand_job_ids(fields[0]):
            out.setdefault(one, []).append(usage)
    return {job: tuple(usages) for job, usages in out.items()}


def _seconds_between(submit: str, start: str) -> float | None:
    """Seconds from Slurm's ``Submit`` to ``Start`` (local times, no zone); None when either is
    ``Unknown``/``None`` (not started)."""
    try:
        return max(0.0, (datetime.fromisoformat(start) - datetime.fromisoformat(submit)).total_seconds())
    except ValueError:
        return None


def query_jobs(job_ids: Iterable[str], runner: Runner = call) -> JobsView:
    """Ask ``squeue`` and ``sacct`` about these jobs (``1234`` or ``1234_5``): their states, and from
    the same ``sacct`` call what each attempt held (``usage``: every task of the arrays asked about).
    What could not be asked is ``None`` in the view, with a note saying why. Never raises for Slurm's sake."""
    job_ids = list(job_ids)
    parents = sorted({job.split("_")[0] for job in job_ids}, key=lambda j: (len(j), j))
    listed = ",".join(parents)
    notes: list[str] = []
    queue: dict[str, str] | None = None
    history: dict[str, tuple[str, ...]] | None = None
    usage: dict[str, tuple[JobUsage, ...]] | None = None
    try:
        queue = parse_squeue(runner([*SQUEUE_ARGS, listed]))
    except SlurmError as error:
        if error.missing:
            notes.append(
                "squeue not found: Slurm is not installed here (or not on PATH); runs without a result "
                "may be pending, running or gone (counted as unknown)"
            )
        elif "invalid job id" in error.stderr.lower():  # a single id that left the queue: nothing queued
            queue = {}
        else:
            notes.append(f"{error}: cannot tell which runs are queued or running")
    try:
        text = runner([*SACCT_ARGS, listed])
        history, usage = parse_sacct(text), parse_usage(text)
    except SlurmError as error:
        if error.missing:
            notes.append("sacct not found: how jobs that left the queue ended is unknown")
        else:
            notes.append(
                f"no Slurm accounting ({error}): cannot tell how jobs that left the queue ended, "
                "nor which were preempted"
            )
    if history is not None:
        # an array cancelled before it split into tasks is one record under the array's own id
        for job in job_ids:
            parent = job.split("_")[0]
            if job not in history and parent != job and parent in history:
                history[job] = history[parent]
    return JobsView(queue=queue, history=history, notes=tuple(notes), usage=usage)
