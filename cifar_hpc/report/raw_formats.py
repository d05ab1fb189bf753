"""The comparison table as raw numbers (fractions, seconds): CSV, JSON, and the records W&B's table takes.

Generated-data results are labelled: a ``data`` column in CSV, ``generated_data`` in JSON.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from cifar_hpc.report.table import Summary

CSV_COLUMNS = (
    "data",
    "model",
    "setting",
    "cell",
    "compare_to",
    "is_baseline",
    "n",
    "expected",
    "test_images",
    "test_acc_mean",
    "test_acc_std",
    "test_acc_ci_low",
    "test_acc_ci_high",
    "test_acc_ci_clipped",
    "delta_mean",
    "delta_ci_low",
    "delta_ci_high",
    "delta_n_pairs",
    "delta_sd",
    "p_value",
    "p_adjusted",
    "significant",
    "mde_pp",
    "seeds_needed",
    "note",
    "design_note",
    "best_val_acc_mean",
    "epochs_run_mean",
    "wall_s_mean",
    "compute_s_mean",
    "train_images_per_s_mean",
    "gpu_hours_mean",
    "gpu_hours_sum",
    "cost_ratio",
    "gpu_util_mean",
    "gpu_util_p95",
    "gpu_mem_peak_mib",
    "lr_found_mean",
    "n_failed",
    "n_running",
    "n_missing",
    "n_corrupt",
)
"""``setting`` is the row's non-model axes as ``key=value, ...`` (the JSON has them as ``axes``)."""


def csv_records(s: Summary) -> list[list[Any]]:
    """The CSV columns of every row, raw values (None for unknown); W&B's table takes the same."""
    values = ({"data": s.data, "setting": row.setting, **vars(row)} for row in s.rows)  # vars: no deep copies
    return [[v[c] for c in CSV_COLUMNS] for v in values]


def render_csv(s: Summary) -> str:
    """One line per row, raw numbers (fractions, seconds); the ``data`` column labels generated data."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in csv_records(s):
        writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in record])
    return buffer.getvalue()


def render_json(s: Summary) -> str:
    """The whole summary (``Summary.to_dict``): rows with their axes, the lists, the counts."""
    return json.dumps(s.to_dict(), indent=2, sort_keys=False) + "\n"
