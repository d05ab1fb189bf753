"""The comparison table as data: one typed ``Row`` per (model, cell), seeds aggregated.

Pure: a loaded ``Study`` and what Slurm said (``slurm.JobsView``) in, a ``Summary`` out; rendering
is ``cifar_hpc.render``'s, pictures ``cifar_hpc.plots``'.

The **baseline** of a model is the row whose cell is the study's ``baseline_cell`` (``study.json``,
else ``baseline``; ``--baseline`` overrides). The difference from the baseline is **paired by seed**:
for each seed run in both the cell and the model's baseline, ``d = test_acc(cell) - test_acc(baseline)``;
the interval is the 95% confidence interval of the mean of ``d`` from Student's t with
``n_pairs - 1`` degrees of freedom (exactly ``scipy.stats.ttest_rel(cell, baseline).confidence_interval()``).
``significant`` means the interval excludes 0. Fewer than two pairs: no interval, note ``n too small``.
Several completed runs of one (model, cell, seed) (a re-submitted grid with a changed config): the
last finished is used, with a warning.

**JSON output** (``Summary.to_dict``; ``"schema": 1``; other tools read it, so fields are only ever
added). Accuracies are fractions in [0, 1] (the differences too), times in seconds, memory in MiB;
unknown values are ``null``; floats carry 6 significant digits. ``rows`` are ``Row``'s fields in
order; ``failed``: run_id, model, cell, seed, error, slurm_job, log; ``missing``: ..., state
(missing|unknown), note; ``running``: ..., state (pending|running|requeued), slurm_job; ``corrupt``:
run_id, path (relative to the study folder), reason. Rows are sorted per model, baseline first,
then by ``delta_mean``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cifar_hpc.config import MODELS
from cifar_hpc.results import RESULT_FILE, is_number
from cifar_hpc.slurm import JobsView
from cifar_hpc.states import RunState, RunStatus, classify_all, count_states
from cifar_hpc.study import Study

CONFIDENCE = 0.95
JSON_SCHEMA = 1
GENERATED = "generated"

NOT_DONE = tuple(state.value for state in RunState if state is not RunState.COMPLETED)
"""States that make ``--strict`` fail: anything but completed."""


@dataclass(frozen=True)
class Row:
    """One (model, cell) of the study, its seeds aggregated."""

    model: str
    cell: str
    is_baseline: bool
    n: int
    """Completed runs (seeds) aggregated in this row."""
    expected: int
    """Runs of this row in study.json or on disk, in any state."""
    seeds: list[int]
    run_ids: list[str]
    test_acc_mean: float | None
    test_acc_std: float | None
    """ddof=1; None when n < 2."""
    delta_mean: float | None
    """Paired difference from the baseline; None on the baseline row."""
    delta_ci_low: float | None
    delta_ci_high: float | None
    delta_n_pairs: int
    """Seeds in both this row and the baseline."""
    p_value: float | None
    """Two-sided paired t-test."""
    significant: bool | None
    """The interval excludes 0; None without an interval."""
    note: str | None
    """``baseline``, ``n too small``, ``no completed baseline run``, ..."""
    best_val_acc_mean: float | None
    epochs_run_mean: float | None
    wall_s_mean: float | None
    train_images_per_s_mean: float | None
    gpu_hours_sum: float | None
    """Summed over the row's runs."""
    gpu_util_mean: float | None
    """Mean over runs of each run's mean utilisation, percent."""
    gpu_util_p95: float | None
    """Mean over runs of each run's 95th percentile, percent."""
    gpu_mem_peak_mib: float | None
    """Max over runs."""
    lr_found_mean: float | None
    """The LR finder's pick; None when the finder was off."""
    n_failed: int
    n_running: int
    """Pending + running + requeued."""
    n_missing: int
    """Missing + unknown."""
    n_corrupt: int


ROW_FIELDS = tuple(f.name for f in fields(Row))

METRICS = {  # result field -> (row field, how runs are combined)
    "best_val_acc": ("best_val_acc_mean", "mean"),
    "epochs_run": ("epochs_run_mean", "mean"),
    "wall_s": ("wall_s_mean", "mean"),
    "train_images_per_s": ("train_images_per_s_mean", "mean"),
    "gpu_hours": ("gpu_hours_sum", "sum"),
    "gpu_util_mean": ("gpu_util_mean", "mean"),
    "gpu_util_p95": ("gpu_util_p95", "mean"),
    "gpu_mem_peak_mib": ("gpu_mem_peak_mib", "max"),
    "lr_found": ("lr_found_mean", "mean"),
}


@dataclass
class Summary:
    """The aggregated study: what every renderer and the plot read."""

    grid: str | None
    data: str | None
    baseline_cell: str
    rows: list[Row]
    failed: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    running: list[dict[str, Any]]
    corrupt: list[dict[str, Any]]
    counts: dict[str, int]
    warnings: list[str]
    slurm_notes: list[str]
    confidence: float = CONFIDENCE

    @property
    def generated(self) -> bool:
        return self.data == GENERATED

    @property
    def incomplete(self) -> int:
        """Runs that are not completed (what ``--strict`` fails on)."""
        return sum(self.counts[s] for s in NOT_DONE)

    @property
    def title(self) -> str:
        title = f"Study {self.grid}" if self.grid else "Runs"
        data = {"cifar10": "CIFAR-10", GENERATED: "GENERATED DATA, not CIFAR-10"}.get(
            self.data or "", self.data or "data unknown"
        )
        return f"{title}: test accuracy ({data})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": JSON_SCHEMA,
            "title": self.title,
            "grid": self.grid,
            "data": self.data,
            "generated_data": self.generated,
            "baseline_cell": self.baseline_cell,
            "confidence": self.confidence,
            "counts": self.counts,
            "rows": [asdict(row) for row in self.rows],
            "failed": self.failed,
            "missing": self.missing,
            "running": self.running,
            "corrupt": self.corrupt,
            "warnings": self.warnings,
            "slurm_notes": self.slurm_notes,
        }


def paired_difference(cell: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of ``cell[i] - base[i]`` with its t-interval and two-sided p-value (same seeds, same order)."""
    d = np.asarray(cell, dtype=float) - np.asarray(base, dtype=float)
    n = len(d)
    out: dict[str, Any] = {
        "delta_mean": float(d.mean()) if n else None,
        "delta_ci_low": None,
        "delta_ci_high": None,
        "delta_n_pairs": n,
        "p_value": None,
        "significant": None,
        "note": None,
    }
    if n == 0:
        out["note"] = "no seed in common with the baseline"
        return out
    if n < 2:
        out["note"] = "n too small"
        return out
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se == 0.0:  # every pair differs by exactly the same amount: a degenerate interval
        low = high = float(d.mean())
        out["note"] = "no spread between pairs"
    else:
        low, high = (float(x) for x in stats.t.interval(confidence, n - 1, loc=float(d.mean()), scale=se))
        out["p_value"] = float(2 * stats.t.sf(abs(float(d.mean()) / se), n - 1))
    out.update(delta_ci_low=low, delta_ci_high=high, significant=bool(low > 0 or high < 0))
    return out


def _frame(statuses: Sequence[RunStatus], warnings: list[str]) -> pd.DataFrame:
    """One row per completed run (the newest of duplicates per model, cell, seed)."""
    records = []
    for s in statuses:
        if s.state is not RunState.COMPLETED:
            continue
        r = s.run.result
        record = {
            "run_id": s.run.run_id,
            "model": s.run.model,
            "cell": s.run.cell,
            "seed": s.run.seed,
            "test_acc": float(r["test_acc"]),
            "finished_at": str(r.get("finished_at") or ""),
        }
        for key in METRICS:
            value = r.get(key)
            record[key] = float(value) if is_number(value) else np.nan
        records.append(record)
    columns = ["run_id", "model", "cell", "seed", "test_acc", "finished_at", *METRICS]
    frame = pd.DataFrame.from_records(records, columns=columns)
    if frame.empty:
        return frame
    frame = frame.sort_values(["model", "cell", "seed", "finished_at", "run_id"])
    key = ["model", "cell", "seed"]
    for (model, cell, seed), group in frame[frame.duplicated(key, keep=False)].groupby(key):
        warnings.append(
            f"{len(group)} completed runs of {model} / {cell} / seed {seed} "
            f"({', '.join(group['run_id'])}): using the last finished, {group['run_id'].iloc[-1]}"
        )
    return frame[~frame.duplicated(key, keep="last")]


def model_order(model: str) -> tuple[int, str]:
    return (MODELS.index(model) if model in MODELS else len(MODELS), model)


def _difference(
    group: pd.DataFrame | None, base: pd.DataFrame | None, is_baseline: bool, confidence: float
) -> dict[str, Any]:
    empty = {
        "delta_mean": None,
        "delta_ci_low": None,
        "delta_ci_high": None,
        "delta_n_pairs": 0,
        "p_value": None,
        "significant": None,
    }
    if is_baseline:
        return {**empty, "note": "baseline"}
    if group is None:
        return {**empty, "note": "no completed run"}
    if base is None:
        return {**empty, "note": "no completed baseline run"}
    paired = group.merge(base, on="seed", suffixes=("", "_base")).sort_values("seed")
    return paired_difference(paired["test_acc"], paired["test_acc_base"], confidence)


def _row(
    model: str,
    cell: str,
    group: pd.DataFrame | None,
    base: pd.DataFrame | None,
    by_state: Counter,
    is_baseline: bool,
    confidence: float,
) -> Row:
    acc = group["test_acc"] if group is not None else pd.Series(dtype=float)
    metrics = {}
    for key, (name, how) in METRICS.items():
        values = group[key].dropna() if group is not None else pd.Series(dtype=float)
        metrics[name] = float(getattr(values, how)()) if len(values) else None
    return Row(
        **_clean(
            {
                "model": model,
                "cell": cell,
                "is_baseline": is_baseline,
                "n": len(acc),
                "expected": sum(by_state.values()),
                "seeds": [int(x) for x in group["seed"]] if group is not None else [],
                "run_ids": list(group["run_id"]) if group is not None else [],
                "test_acc_mean": float(acc.mean()) if len(acc) else None,
                "test_acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
                **_difference(group, base, is_baseline, confidence),
                **metrics,
                "n_failed": by_state[RunState.FAILED],
                "n_running": sum(n for s, n in by_state.items() if s.in_progress),
                "n_missing": by_state[RunState.MISSING] + by_state[RunState.UNKNOWN],
                "n_corrupt": by_state[RunState.CORRUPT],
            }
        )
    )


def aggregate(study: Study, jobs: JobsView | None = None, *, confidence: float = CONFIDENCE) -> Summary:
    """The table: one row per (model, cell), seeds aggregated, paired differences from the baseline."""
    statuses = classify_all(study, jobs)
    warnings = list(study.warnings)
    frame = _frame(statuses, warnings)
    base_cell = study.baseline_cell

    per_key_states: dict[tuple[str, str], Counter] = {}  # (model, cell) -> state -> runs
    for s in statuses:
        if s.run.model and s.run.cell:
            per_key_states.setdefault((s.run.model, s.run.cell), Counter())[s.state] += 1
    groups = dict(tuple(frame.groupby(["model", "cell"]))) if not frame.empty else {}
    rows = [
        _row(
            model,
            cell,
            groups.get((model, cell)),
            groups.get((model, base_cell)),
            by_state,
            cell == base_cell,
            confidence,
        )
        for (model, cell), by_state in per_key_states.items()
    ]
    rows.sort(
        key=lambda r: (model_order(r.model), not r.is_baseline, r.delta_mean is None, -(r.delta_mean or 0.0), r.cell)
    )
    if rows and not any(r.is_baseline for r in rows):
        warnings.append(f"no row is the baseline cell {base_cell!r}: no differences (choose one with --baseline)")

    def ident(s: RunStatus) -> dict[str, Any]:
        return {"run_id": s.run.run_id, "model": s.run.model, "cell": s.run.cell, "seed": s.run.seed}

    def job(s: RunStatus) -> str | None:
        return s.run.slurm.job if s.run.slurm else None

    ordered = sorted(
        statuses,
        key=lambda s: (
            model_order(s.run.model or ""),
            s.run.cell != base_cell,
            s.run.cell or "",
            -1 if s.run.seed is None else s.run.seed,
            s.run.run_id,
        ),
    )
    return Summary(
        grid=study.grid,
        data=study.data,
        baseline_cell=base_cell,
        rows=rows,
        failed=[
            {**ident(s), "error": s.note, "slurm_job": job(s), "log": s.run.slurm.log if s.run.slurm else None}
            for s in ordered
            if s.state is RunState.FAILED
        ],
        missing=[
            {**ident(s), "state": s.state.value, "note": s.note}
            for s in ordered
            if s.state in (RunState.MISSING, RunState.UNKNOWN)
        ],
        running=[{**ident(s), "state": s.state.value, "slurm_job": job(s)} for s in ordered if s.state.in_progress],
        corrupt=[
            {"run_id": s.run.run_id, "path": f"{s.run.run_id}/{RESULT_FILE}", "reason": s.note}
            for s in ordered
            if s.state is RunState.CORRUPT
        ],
        counts=count_states(statuses),
        warnings=warnings,
        slurm_notes=list(jobs.notes) if jobs else [],
        confidence=confidence,
    )


def _clean(value: Any) -> Any:
    """JSON-ready: NaN -> None, floats to 6 significant digits (stable golden files)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, np.integer):
        return int(value)
    return value
