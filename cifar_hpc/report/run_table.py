"""One row per run, tidy: who it is, where it stands, what it scored and cost, and every setting.

``collect --runs -o runs.csv`` (or ``.json``, ``.parquet``) writes these records; the HTML report's
per-run table and its embedded JSON are the same records. The shape pandas users expect: one
observation per row, one variable per column (``pd.read_csv("runs.csv")``; the comparison table's
runs are ``df[df.in_table]``). Where each run stands is the one classifier's
(``cifar_hpc.study.states``), its progress ``status --runs``' (``run_rows.run_row``), its cost the
table's (``efficiency.compute_seconds``).

Columns: ``RUN_COLUMNS``, then every setting of its config as ``config.<dotted key>`` (lists as
JSON text in CSV). Accuracies are fractions, times seconds, memory MiB; unknown values empty (CSV)
or null (JSON).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.slurm import JobsView
from cifar_hpc.config.settings import flatten
from cifar_hpc.report.efficiency import compute_seconds
from cifar_hpc.report.grouping import model_order
from cifar_hpc.report.run_rows import log_of, run_row
from cifar_hpc.report.table import Summary
from cifar_hpc.study.code_version import code_differs, label_of, submitted_code, trained_code
from cifar_hpc.study.recorded import Study
from cifar_hpc.study.states import RunStatus
from cifar_hpc.training.results import is_number

RUN_COLUMNS = (
    "grid",
    "run_id",
    "model",
    "cell",
    "seed",
    "state",
    "in_table",
    "note",
    "test_acc",
    "test_images",
    "best_val_acc",
    "epochs_run",
    "epochs",
    "wall_s",
    "compute_s",
    "gpu_hours",
    "train_images_per_s",
    "gpu_util_mean",
    "gpu_util_p95",
    "gpu_mem_peak_mib",
    "lr_found",
    "attempts",
    "requeues",
    "queue_wait_s",
    "slurm_job",
    "log",
    "data",
    "data_fingerprint",
    "code",
    "submitted_code",
    "code_changed",
    "started_at",
    "finished_at",
)
"""The fixed columns, in order; ``config.*`` follow."""

RESULT_FIELDS = (
    "test_images",
    "wall_s",
    "gpu_hours",
    "train_images_per_s",
    "gpu_util_mean",
    "gpu_util_p95",
    "gpu_mem_peak_mib",
    "lr_found",
    "requeues",
    "data",
    "data_fingerprint",
    "started_at",
    "finished_at",
)


def _order(study: Study, s: RunStatus) -> tuple:
    run = s.run
    return (
        model_order(run.model or ""),
        run.cell != study.baseline_cell,
        run.cell or "",
        -1 if run.seed is None else run.seed,
        run.run_id,
    )


def _queue_wait(s: RunStatus, jobs: JobsView | None) -> float | None:
    """Its first attempt's wait in Slurm's queue (``Start`` - ``Submit``), where accounting knows it."""
    if jobs is None or jobs.usage is None or s.run.slurm is None:
        return None
    waits = [one.queue_wait_s for one in jobs.usage.get(s.run.slurm.job, ()) if one.queue_wait_s is not None]
    return waits[0] if waits else None


def run_record(study: Study, s: RunStatus, jobs: JobsView | None, in_table: bool) -> dict[str, Any]:
    """One run's record: ``RUN_COLUMNS`` and its settings as ``config.<key>``."""
    run = s.run
    row = run_row(s, study.root / run.run_id, log_of(study.root, run))
    result = run.result or {}
    completed = row.test_acc is not None
    trained, submitted = trained_code(run), submitted_code(run)
    record: dict[str, Any] = {
        "grid": study.grid,
        "run_id": run.run_id,
        "model": run.model,
        "cell": run.cell,
        "seed": run.seed,
        "state": row.state,
        "in_table": in_table,
        "note": s.note,
        "test_acc": row.test_acc,
        "best_val_acc": row.best_val_acc,
        "epochs_run": row.epoch,
        "epochs": row.epochs,
        "compute_s": compute_seconds(result) if completed else None,
        "attempts": row.attempts,
        "queue_wait_s": _queue_wait(s, jobs),
        "slurm_job": row.slurm_id,
        "log": row.log,
        "code": None if trained is None else label_of(trained),
        "submitted_code": None if submitted is None else label_of(submitted),
        "code_changed": code_differs(run),
        **{key: result.get(key) for key in RESULT_FIELDS},
    }
    for key in ("wall_s", "gpu_hours", "gpu_util_mean", "gpu_util_p95", "gpu_mem_peak_mib", "lr_found"):
        if not is_number(record[key]):
            record[key] = None
    record.update((f"config.{key}", value) for key, value in flatten(run.config or {}))
    return record


def run_records(study: Study, statuses: Sequence[RunStatus], summary: Summary, jobs: JobsView | None) -> list[dict]:
    """Every run of the study, other versions of a cell included (``in_table`` says which the table counts),
    in the table's order: model, the baseline cell first, cell, seed."""
    counted = {run_id for row in summary.rows for run_id in row.run_ids}
    ordered = sorted(statuses, key=lambda s: _order(study, s))
    return [run_record(study, s, jobs, s.run.run_id in counted) for s in ordered]


def columns(records: Iterable[dict[str, Any]]) -> list[str]:
    """``RUN_COLUMNS``, then every ``config.*`` key any run has, sorted."""
    settings = sorted({key for record in records for key in record if key.startswith("config.")})
    return [*RUN_COLUMNS, *settings]


def _plain(value: Any) -> Any:
    """A list or mapping (``config.tricks.accumulate``) as JSON text: one value per cell."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _cell(value: Any) -> Any:
    return "" if value is None else _plain(value)


def render_runs_csv(records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    names = columns(records)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for record in records:
        writer.writerow([_cell(record.get(name)) for name in names])
    return buffer.getvalue()


def render_runs_json(records: Sequence[dict[str, Any]]) -> str:
    """A JSON list of records (``pd.read_json(path)`` reads it), every column in every record."""
    names = columns(records)
    return json.dumps([{name: record.get(name) for name in names} for record in records], indent=1) + "\n"


def write_runs_parquet(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Parquet through pandas; needs pyarrow (or fastparquet), which cifar-hpc does not depend on."""
    import pandas as pd

    names = columns(records)
    frame = pd.DataFrame([[_plain(record.get(name)) for name in names] for record in records], columns=names)
    try:
        frame.to_parquet(path, index=False)
    except ImportError:
        raise UserError("writing .parquet needs pyarrow: pip install pyarrow (or write runs.csv)") from None


RUN_FORMATS = {".csv": render_runs_csv, ".json": render_runs_json}
"""``-o`` extensions of ``collect --runs`` and their writers (``.parquet`` too, through pandas)."""
