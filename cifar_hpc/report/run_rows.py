"""Each run of a study, one row (``status --runs``), and one line per run as it ends (``submit``).

A row says where the run stands (the one classifier, ``cifar_hpc.study.states``), how far it got (epoch
reached, best val acc: from ``result.json`` once it ended, from ``progress.json`` while it trains,
which training rewrites after every epoch), how many attempts it took (``attempts.json``, else its
result's list), who runs it (Slurm id, or local) and where its log is (``cifar_hpc.study.run_logs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cifar_hpc.study.code_version import code_note
from cifar_hpc.study.plan import axis_text, run_label
from cifar_hpc.study.recorded import LOCAL_LOG, RecordedRun
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import RunStatus
from cifar_hpc.training.attempts import ATTEMPTS_FILE
from cifar_hpc.training.results import PROGRESS_FILE, is_number


@dataclass(frozen=True)
class RunRow:
    run_id: str
    cell: str | None
    model: str | None
    seed: int | None
    state: str
    epoch: int | None
    """Epochs completed; None: none known yet."""
    epochs: int | None
    """Epochs it is set to train."""
    best_val_acc: float | None
    test_acc: float | None
    attempts: int
    executor: str | None
    """``slurm`` or ``local``: what its newest submission was; None: never submitted (or unrecorded)."""
    slurm_id: str | None
    """``<array>_<task>`` (or the job id); None for a local run."""
    log: str | None
    note: str | None
    code_note: str | None = None
    """It trained other code than its submission's (``cifar_hpc.study.code_version``); None: the same, or not known."""
    axes: dict[str, Any] | None = None
    """Its non-seed axis values, model included (``study.json``); None: not recorded."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_progress(folder: Path) -> dict[str, Any] | None:
    """``progress.json`` (training's per-epoch note) when present and readable as an object; a missing
    or half-written file is "no progress yet"."""
    progress = _read_json(folder / PROGRESS_FILE)
    return progress if isinstance(progress, dict) else None


def log_of(root: Path, run: RecordedRun) -> str | None:
    """Where the run's log is: its Slurm task's, its local ``train.log``, or None (none recorded)."""
    if run.slurm is not None:
        return run.slurm.log
    if run.local is not None:
        return run.local.log
    path = root.resolve() / run.run_id / LOCAL_LOG
    return str(path) if path.exists() else None


def _number(value: Any, kind: type) -> Any:
    return kind(value) if is_number(value) else None


def run_row(status: RunStatus, folder: Path, log: str | None) -> RunRow:
    run, state = status.run, status.state
    result = run.result or {}
    progress = read_progress(folder)
    # while it trains, progress.json is newer than an earlier attempt's result
    source = progress if progress and (state.in_progress or not result) else result
    epoch = _number(source.get("epoch" if source is progress else "epochs_run"), int)
    epochs = _number((run.config or {}).get("epochs"), int)
    if source is progress and epochs is None:
        epochs = _number(progress.get("epochs"), int)
    attempts = _read_json(folder / ATTEMPTS_FILE)
    if not isinstance(attempts, list):
        attempts = result.get("attempts") if isinstance(result.get("attempts"), list) else []
    return RunRow(
        run_id=run.run_id,
        cell=run.cell,
        model=run.model,
        seed=run.seed,
        state=state.value,
        epoch=epoch,
        epochs=epochs,
        best_val_acc=_number(source.get("best_val_acc"), float),
        test_acc=_number(result.get("test_acc"), float) if state is RunState.COMPLETED else None,
        attempts=len(attempts),
        executor="slurm" if run.slurm is not None else "local" if run.local is not None else None,
        slurm_id=run.slurm.job if run.slurm is not None else None,
        log=log,
        note=status.note,
        code_note=code_note(run),
        axes=run.axes,
    )


def _percent(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "-"


def _short_path(path: str | None) -> str:
    """A log path relative to the working directory where that is shorter."""
    if not path:
        return "-"
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if len(relative) < len(path) else path


HEADERS = ("run", "cell", "model", "seed", "state", "epoch", "best val", "attempts", "slurm", "log")
AXES_HEADER = "axes"
"""The column of the axes but the model and the seed (``epochs=2``), after ``model``: only when a run has one."""


def row_cells(row: RunRow, *, axes: bool = False) -> tuple[str, ...]:
    """A row's cells; ``axes``: with the axes column (runs of one cell, model and seed differ there)."""
    epoch = "-" if row.epoch is None else f"{row.epoch}/{row.epochs}" if row.epochs else str(row.epoch)
    return (
        row.run_id,
        row.cell or "?",
        row.model or "?",
        *([axis_text(row.axes, ",") or "-"] if axes else []),
        "?" if row.seed is None else str(row.seed),
        row.state,
        epoch,
        _percent(row.best_val_acc),
        str(row.attempts) if row.attempts else "-",
        row.slurm_id or row.executor or "-",
        _short_path(row.log),
    )


def rows_text(rows: Sequence[RunRow]) -> str:
    """The runs as aligned plain columns, one line each, never cut (a log path is what one copies;
    ``grep`` and ``awk`` read it as ``squeue``'s output)."""
    axes = any(axis_text(row.axes) for row in rows)
    headers = (*HEADERS[:3], AXES_HEADER, *HEADERS[3:]) if axes else HEADERS
    cells = [headers, *(row_cells(row, axes=axes) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() + "\n" for line in cells)


def why_lines(rows: Sequence[RunRow]) -> list[str]:
    """One line per run that did not complete and is not simply queued or training: why; and one per
    run that trained other code than its submission's."""
    quiet = {RunState.COMPLETED.value, RunState.RUNNING.value, RunState.PENDING.value}
    lines = [f"{row.run_id} {row.state}: {row.note}" for row in rows if row.state not in quiet and row.note]
    return lines + [f"{row.run_id} {row.state}: CODE CHANGED: {row.code_note}" for row in rows if row.code_note]


# --- one line per run as it ends --------------------------------------------------------------------


def end_line(
    run_id: str,
    cell: str | None,
    model: str | None,
    seed: int | None,
    *,
    completed: bool,
    test_acc: float | None = None,
    reason: str | None = None,
    log: str | None = None,
    axes: Mapping[str, Any] | None = None,
) -> str:
    """``COMPLETED <id> <cell>/<model>/<axes>/seed <s>: test 93.1%`` or ``FAILED <id> ...: <reason> (log:
    <path>)``; the run named by ``plan.run_label``, its other axis values (``epochs=2``) included."""
    what = f"{run_id} {run_label(cell, model, seed, axes)}"
    if completed:
        return f"COMPLETED {what}: test {_percent(test_acc) if test_acc is not None else 'accuracy unknown'}"
    return f"FAILED {what}: {reason or 'no reason recorded'}" + (f" (log: {log})" if log else "")


def end_line_of_result(
    run_id: str,
    cell: str | None,
    model: str | None,
    seed: int | None,
    result: Mapping[str, Any],
    log: str | None,
    *,
    axes: Mapping[str, Any] | None = None,
) -> str:
    """The end line of a run from what training returned (``result.json``'s content)."""
    completed = result.get("status") == "completed"
    return end_line(
        run_id,
        cell,
        model,
        seed,
        completed=completed,
        test_acc=_number(result.get("test_acc"), float),
        reason=None if completed else str(result.get("error") or "failed (no error recorded)"),
        log=log,
        axes=axes,
    )


def end_line_of_status(status: RunStatus, log: str | None) -> str:
    """The end line of a run that ``status`` found ended: completed, or failed/missing/corrupt with why."""
    run = status.run
    if status.state is RunState.COMPLETED:
        return end_line_of_result(run.run_id, run.cell, run.model, run.seed, run.result or {}, log, axes=run.axes)
    reason = status.note if status.state is RunState.FAILED else f"{status.state.value}: {status.note}"
    return end_line(run.run_id, run.cell, run.model, run.seed, completed=False, reason=reason, log=log, axes=run.axes)
