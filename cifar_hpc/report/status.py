"""Where a study stands: how many runs are pending, running, completed, failed, preempted/requeued,
missing, from the study's folder and from Slurm.

A completed ``result.json`` decides; otherwise the run's newest submission does: Slurm is asked
(``squeue``, and ``sacct`` where the cluster keeps accounting) about the newest job ``study.json``
lists for each run, so a failed run whose retry is queued counts as pending, not failed.
``cifar_hpc.study.states.classify`` has the rules (the same for ``submit`` and ``collect``),
``cifar_hpc.cluster.slurm`` the commands. Either command may be missing: Slurm not installed, the
controller down, or no accounting; then the status says what it could not know, and runs whose fate
depends on it are counted as ``unknown`` (no squeue) or ``missing`` with a note (no sacct).

Each study's efficiency (training over allocated device-seconds, queue wait) is one line under the
table, from the same ``sacct`` answer (``cifar_hpc.report.efficiency``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifar_hpc.base.words import counted
from cifar_hpc.cluster import slurm
from cifar_hpc.report.efficiency import Efficiency, efficiency_line, study_efficiency
from cifar_hpc.report.grouping import group_runs
from cifar_hpc.report.run_rows import RunRow, end_line_of_status, log_of, rows_text, run_row, why_lines
from cifar_hpc.study.manifest import STUDY_FILE
from cifar_hpc.study.recorded import load_study
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import RunStatus, ask_slurm, classify_all, count_states


@dataclass
class StudyStatus:
    root: Path
    grid: str | None
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    """What could not be known (Slurm), and warnings about the folder."""
    efficiency: Efficiency | None = None
    """None while no run has said how long it trained."""
    runs: list[RunStatus] = field(default_factory=list)
    """Each run's status (``rows`` makes them the rows of ``status --runs``)."""

    def rows(self) -> list[RunRow]:
        return [run_row(s, self.root / s.run.run_id, log_of(self.root, s.run)) for s in self.runs]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return sum(n for state, n in self.counts.items() if RunState(state).ended)

    @property
    def done(self) -> bool:
        """Nothing is pending, running, requeued or of unknown state."""
        return self.ended == self.total

    def to_dict(self, *, runs: bool = False) -> dict[str, Any]:
        return {
            "study": str(self.root),
            "grid": self.grid,
            "total": self.total,
            "counts": self.counts,
            "done": self.done,
            "efficiency": self.efficiency.to_dict() if self.efficiency else None,
            "notes": self.notes,
            **({"runs": [row.to_dict() for row in self.rows()]} if runs else {}),
        }


def study_status(root: str | Path, runner: slurm.Runner = slurm.call) -> StudyStatus:
    study = load_study(root, check_mixing=False)
    view = ask_slurm(study, runner)
    statuses = classify_all(study, view)
    notes = list(view.notes) if view else []
    if not study.has_manifest:
        notes.append(f"no {STUDY_FILE}: runs that never started are not counted")
    waiting = sum(
        1 for s in statuses if s.state is RunState.PENDING and (s.note or "").startswith("waiting in its pack")
    )
    if waiting:
        notes.append(
            f"{waiting} of the pending runs wait in a running pack (`submit --pack`): their task trains another run"
        )
    left_out: list[str] = []
    group_runs(statuses, left_out)  # collect's choice of each cell's version: counted here, not in its table
    notes += [f"collect: {line}" for line in left_out]
    return StudyStatus(
        root=Path(root),
        grid=study.grid,
        counts=count_states(statuses),
        notes=notes,
        efficiency=study_efficiency(study, view, statuses),
        runs=statuses,
    )


COLUMNS = (
    (RunState.COMPLETED, "completed"),
    (RunState.FAILED, "failed"),
    (RunState.RUNNING, "running"),
    (RunState.PENDING, "pending"),
    (RunState.REQUEUED, "preempted/requeued"),
    (RunState.MISSING, "missing"),
    (RunState.CORRUPT, "corrupt"),
    (RunState.UNKNOWN, "unknown"),
)
"""The table's columns: each state and its header."""


def status_table(statuses: Sequence[StudyStatus]) -> Any:
    from rich.table import Table

    table = Table(
        title="Studies",
        caption="preempted/requeued: waiting to restart after a preemption or requeue; "
        "unknown: no result and Slurm could not be asked",
        caption_justify="left",
    )
    table.add_column("study", no_wrap=True)
    table.add_column("runs", justify="right")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    for s in statuses:
        name = s.root.name + (f" ({s.grid})" if s.grid and s.grid != s.root.name else "")
        table.add_row(name, str(s.total), *(str(s.counts[key]) if s.counts[key] else "·" for key, _ in COLUMNS))
    return table


def render_status(statuses: Sequence[StudyStatus], console: Any, *, runs: bool = False) -> None:
    console.print(status_table(statuses))
    if runs:
        for s in statuses:
            rows = s.rows()
            console.print(f"\n{s.root.name}: {counted(len(rows), 'run')}", markup=False, highlight=False)
            console.out(rows_text(rows), end="", highlight=False)
            for line in why_lines(rows):
                console.print(line, markup=False, highlight=False, soft_wrap=True)
    for s in statuses:
        if s.efficiency is not None:
            name = f"{s.root.name}: " if len(statuses) > 1 else ""
            console.print(name + efficiency_line(s.efficiency), markup=False, highlight=False, soft_wrap=True)
    everywhere = set.intersection(*(set(s.notes) for s in statuses)) if len(statuses) > 1 else set()
    for note in sorted(everywhere):
        console.print(note, markup=False, highlight=False)
    for s in statuses:
        for note in s.notes:
            if note not in everywhere:
                console.print(f"{s.root}: {note}", markup=False, highlight=False)


def render_status_json(statuses: Sequence[StudyStatus], *, runs: bool = False) -> str:
    return json.dumps({"schema": 1, "studies": [s.to_dict(runs=runs) for s in statuses]}, indent=2) + "\n"


def _describe(s: StudyStatus) -> str:
    parts = [f"{s.counts[key]} {header}" for key, header in COLUMNS if s.counts[key]]
    return f"{s.root.name}: " + (", ".join(parts) or "no runs")


def watch(
    paths: Sequence[str | Path],
    *,
    interval_s: float = 10.0,
    timeout_s: float | None = None,
    console: Any = None,
    runner: slurm.Runner = slurm.call,
    announce: Collection[str] | None = None,
) -> list[StudyStatus]:
    """Follow studies with a progress bar (runs ended / runs) until every run has ended, printing one
    line per run as it ends (``run_rows.end_line``): the runs of ``announce`` (``submit --wait``: the
    ones it submitted), else those not yet ended when the watch began.

    Returns the last statuses; raises ``TimeoutError`` (carrying them as ``.statuses``) after
    ``timeout_s``. ``submit --wait`` calls this too.
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
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}
    watched = set(announce) if announce is not None else None
    with progress:
        while True:
            statuses = [study_status(path, runner) for path in paths]
            if watched is None:
                watched = {r.run.run_id for s in statuses for r in s.runs if not r.state.ended}
            for s in statuses:
                for run in s.runs:
                    if run.state.ended and run.run.run_id in watched:
                        watched.discard(run.run.run_id)
                        line = end_line_of_status(run, log_of(s.root, run.run))
                        progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
            for s in statuses:
                key = str(s.root)
                if key not in tasks:
                    tasks[key] = progress.add_task(_describe(s), total=s.total)
                progress.update(tasks[key], description=_describe(s), completed=s.ended, total=s.total)
            if all(s.done for s in statuses):
                break
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                error = TimeoutError(
                    f"{counted(sum(s.total - s.ended for s in statuses), 'run')} still pending, running or "
                    f"unknown after {timeout_s:g} s"
                )
                error.statuses = statuses  # type: ignore[attr-defined]
                raise error
            time.sleep(
                interval_s if timeout_s is None else max(0.0, min(interval_s, timeout_s - (time.monotonic() - start)))
            )
    return statuses
