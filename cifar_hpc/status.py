"""Where a study stands: how many runs are pending, running, completed, failed, preempted/requeued,
missing, from the study's folder and from Slurm.

A run's ``result.json`` decides first (completed, failed, corrupt); for the others we ask Slurm
about the jobs that ``study.json`` lists (``cifar_hpc.collect.classify`` has the rules):

* ``squeue -h -r -o "%i %T" -j <array ids>``: the jobs still queued or running, one line per array
  task (``-r``), e.g. ``1234_3 RUNNING``;
* ``sacct -X -n -P -D --format=JobID,State -j <array ids>``, where the cluster keeps accounting:
  how jobs that left the queue ended (``1234_3|TIMEOUT``), and, through ``-D`` (every attempt of a
  requeued job, oldest first), which runs were preempted or requeued.

Either may be missing: Slurm not installed (no ``squeue`` on PATH), the controller down, or no
accounting (``sacct`` refuses). Then the status says what it could not know, and runs without a
result whose fate depends on it are counted as ``unknown`` (no squeue) or ``missing`` with a note
(no sacct). Every Slurm command goes through ``_slurm`` (one small function); everything else here
is pure and tested on real ``squeue``/``sacct`` output text.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_hpc.collect import (
    CONFIG_FILE, STUDY_FILE, SlurmView, Study, classify_all, count_states, load_study,
)
from cifar_hpc.errors import UserError
from cifar_hpc.results import RESULT_FILE

SQUEUE_ARGS = ("squeue", "-h", "-r", "-o", "%i %T", "-j")
SACCT_ARGS = ("sacct", "-X", "-n", "-P", "-D", "--format=JobID,State", "-j")
SLURM_TIMEOUT_S = 30.0
ENDED = ("completed", "failed", "corrupt", "missing")
"""States after which nothing more will happen to a run (without a resubmission)."""

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str] | None"]


def _slurm(args: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    """Run one Slurm client command; None when it is not installed (not on PATH).

    The only place this module talks to Slurm: tests replace it (``runner=``) or empty PATH.
    """
    exe = shutil.which(args[0])
    if exe is None:
        return None
    try:
        return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=SLURM_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(args), 124, "", f"no answer within {SLURM_TIMEOUT_S:.0f} s")
    except OSError as e:
        return subprocess.CompletedProcess(list(args), 126, "", str(e))


# ---------------------------------------------------------------------------------------------
# Parsing what Slurm prints (pure)

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
    """``sacct -X -n -P -D --format=JobID,State`` output -> job id -> states, in the order printed
    (oldest attempt first)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        job, sep, state = line.strip().partition("|")
        if not sep or not job[:1].isdigit() or not state.strip():
            continue
        for one in expand_job_ids(job):
            out.setdefault(one, []).append(_state_word(state.split("|")[0]))
    return {job: tuple(states) for job, states in out.items()}


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no message")


def query_slurm(job_ids: Iterable[str], runner: Runner = _slurm) -> SlurmView:
    """Ask ``squeue`` and ``sacct`` about these jobs (``1234`` or ``1234_5``); what could not be
    asked is ``None`` in the view, with a note saying why."""
    parents = sorted({job.split("_")[0] for job in job_ids}, key=lambda j: (len(j), j))
    notes: list[str] = []
    queue: dict[str, str] | None = None
    history: dict[str, tuple[str, ...]] | None = None
    listed = ",".join(parents)

    done = runner([*SQUEUE_ARGS, listed])
    if done is None:
        notes.append("squeue not found: Slurm is not installed here (or not on PATH); runs without a result "
                     "may be pending, running or gone (counted as unknown)")
    elif done.returncode == 0:
        queue = parse_squeue(done.stdout)
    elif "invalid job id" in done.stderr.lower():  # a single id that left the queue: nothing queued
        queue = {}
    else:
        notes.append(f"squeue failed ({_first_line(done.stderr)}): cannot tell which runs are queued or running")

    done = runner([*SACCT_ARGS, listed])
    if done is None:
        notes.append("sacct not found: how jobs that left the queue ended is unknown")
    elif done.returncode == 0:
        history = parse_sacct(done.stdout)
    else:
        notes.append(f"no Slurm accounting (sacct: {_first_line(done.stderr)}): cannot tell how jobs that left "
                     "the queue ended, nor which were preempted")
    return SlurmView(queue=queue, history=history, notes=tuple(notes))


def slurm_view(study: Study, runner: Runner = _slurm) -> SlurmView | None:
    """What Slurm says about the study's jobs; None when the study has none (local executor)."""
    jobs = [run.slurm.job for run in study.runs.values() if run.slurm is not None]
    return query_slurm(jobs, runner) if jobs else None


# ---------------------------------------------------------------------------------------------
# Status of studies


def _looks_like_study(path: Path) -> bool:
    if (path / STUDY_FILE).exists():
        return True
    return any(p.is_dir() and ((p / RESULT_FILE).exists() or (p / CONFIG_FILE).exists()) for p in path.iterdir())


def find_studies(path: str | Path) -> list[Path]:
    """``path`` itself when it is a study, else its sub-folders holding a ``study.json`` (``runs/``)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder" if path.exists() else f"{path} does not exist")
    if (path / STUDY_FILE).exists():
        return [path]
    studies = sorted(p for p in path.iterdir() if p.is_dir() and (p / STUDY_FILE).exists())
    if studies:
        return studies
    if _looks_like_study(path):
        return [path]
    raise UserError(f"{path} is not a study folder and holds none (no {STUDY_FILE}, no run folders)")


@dataclass
class StudyStatus:
    root: Path
    grid: str | None
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    """What could not be known (Slurm), and warnings about the folder."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return sum(self.counts[s] for s in ENDED)

    @property
    def done(self) -> bool:
        """Nothing is pending, running, requeued or of unknown state."""
        return self.ended == self.total

    def to_dict(self) -> dict[str, Any]:
        return {"study": str(self.root), "grid": self.grid, "total": self.total, "counts": self.counts,
                "done": self.done, "notes": self.notes}


def study_status(root: str | Path, runner: Runner = _slurm) -> StudyStatus:
    study = load_study(root, check_mixing=False)
    view = slurm_view(study, runner)
    counts = count_states(classify_all(study, view))
    notes = list(view.notes) if view else []
    if not study.has_manifest:
        notes.append(f"no {STUDY_FILE}: runs that never started are not counted")
    return StudyStatus(root=Path(root), grid=study.grid, counts=counts, notes=notes)


COLUMNS = (("completed", "completed"), ("failed", "failed"), ("running", "running"), ("pending", "pending"),
           ("requeued", "preempted/requeued"), ("missing", "missing"), ("corrupt", "corrupt"),
           ("unknown", "unknown"))


def status_table(statuses: Sequence[StudyStatus]) -> Any:
    from rich.table import Table

    table = Table(title="Studies", caption="preempted/requeued: waiting to restart after a preemption or requeue; "
                  "unknown: no result and Slurm could not be asked", caption_justify="left")
    table.add_column("study", no_wrap=True)
    table.add_column("runs", justify="right")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    for s in statuses:
        name = s.root.name + (f" ({s.grid})" if s.grid and s.grid != s.root.name else "")
        table.add_row(name, str(s.total), *(str(s.counts[key]) if s.counts[key] else "·" for key, _ in COLUMNS))
    return table


def render_status(statuses: Sequence[StudyStatus], console: Any) -> None:
    console.print(status_table(statuses))
    everywhere = set.intersection(*(set(s.notes) for s in statuses)) if len(statuses) > 1 else set()
    for note in sorted(everywhere):
        console.print(note, markup=False, highlight=False)
    for s in statuses:
        for note in s.notes:
            if note not in everywhere:
                console.print(f"{s.root}: {note}", markup=False, highlight=False)


def render_status_json(statuses: Sequence[StudyStatus]) -> str:
    return json.dumps({"schema": 1, "studies": [s.to_dict() for s in statuses]}, indent=2) + "\n"


def _describe(s: StudyStatus) -> str:
    parts = [f"{s.counts[key]} {header}" for key, header in COLUMNS if s.counts[key]]
    return f"{s.root.name}: " + (", ".join(parts) or "no runs")


def watch(paths: Sequence[str | Path], *, interval_s: float = 10.0, timeout_s: float | None = None,
          console: Any = None, runner: Runner = _slurm) -> list[StudyStatus]:
    """Follow studies with a progress bar (runs ended / runs) until every run has ended.

    Returns the last statuses; raises ``TimeoutError`` (carrying them as ``.statuses``) after
    ``timeout_s``. ``submit --wait`` can call this too.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = console or Console()
    start = time.monotonic()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False)
    tasks: dict[str, Any] = {}
    with progress:
        while True:
            statuses = [study_status(path, runner) for path in paths]
            for s in statuses:
                key = str(s.root)
                if key not in tasks:
                    tasks[key] = progress.add_task(_describe(s), total=s.total)
                progress.update(tasks[key], description=_describe(s), completed=s.ended, total=s.total)
            if all(s.done for s in statuses):
                break
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                error = TimeoutError(f"{sum(s.total - s.ended for s in statuses)} runs still pending, running or "
                                     f"unknown after {timeout_s:g} s")
                error.statuses = statuses  # type: ignore[attr-defined]
                raise error
            time.sleep(interval_s if timeout_s is None else
                       max(0.0, min(interval_s, timeout_s - (time.monotonic() - start))))
    return statuses


# ---------------------------------------------------------------------------------------------
# Pushing a study's offline W&B runs (``cifar-hpc sync``)


@dataclass(frozen=True)
class OfflineRun:
    path: Path
    """The ``offline-run-<time>-<id>`` folder."""
    synced: bool
    """``wandb sync`` already pushed it: it leaves ``run-<id>.wandb.synced`` next to the file."""


def offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline W&B run of a study: each run's ``<run_id>/wandb/offline-run-*`` (training) and
    the study's own ``wandb/offline-run-*`` (``collect --wandb``'s summary run)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} does not exist" if not root.exists() else f"{root} is not a folder")
    folders = {p.parent for pattern in ("wandb/offline-run-*/*.wandb", "*/wandb/offline-run-*/*.wandb")
               for p in root.glob(pattern)}
    return [OfflineRun(f, all(w.with_suffix(".wandb.synced").exists() for w in f.glob("*.wandb")))
            for f in sorted(folders)]


def _wandb_sync(paths: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    """``wandb sync <paths>``: the one place that uploads (it needs a network and a W&B login)."""
    exe = shutil.which("wandb")
    command = [exe] if exe else [sys.executable, "-m", "wandb"]
    return subprocess.run([*command, "sync", *map(str, paths)], capture_output=True, text=True, check=False)


def sync_study(root: str | Path, *, dry_run: bool = False, include_synced: bool = False,
               push: Callable[[Sequence[Path]], subprocess.CompletedProcess[str]] = _wandb_sync,
               ) -> tuple[list[OfflineRun], list[OfflineRun], subprocess.CompletedProcess[str] | None]:
    """Push the study's offline runs that are not synced yet: ``(to_push, skipped, wandb's answer)``."""
    runs = offline_runs(root)
    todo = [r for r in runs if include_synced or not r.synced]
    skipped = [r for r in runs if r not in todo]
    if dry_run or not todo:
        return todo, skipped, None
    return todo, skipped, push([r.path for r in todo])

