"""The comparison table as data: one typed ``Row`` per setting (everything but the seed), seeds aggregated.

Pure: a loaded ``Study`` and what Slurm said (``slurm.JobsView``) in, a ``Summary`` out; rendering
is ``cifar_hpc.report.render``'s, pictures ``cifar_hpc.report.plots``', the statistics ``cifar_hpc.report.significance``'s.

**Rows.** Runs that differ in anything that changes what is learnt are different rows: a row is a
cell at one value of every axis (``axes``: the non-seed axis values, model included) and one
configuration (``config.setting_of``). Runs of one cell with other configurations are other versions
of it (``cifar_hpc.report.versions``): one is shown (``where``, else the grid's own, else the one with the
most completed runs), the others are ``other_versions``: listed, never in the table, named in a
warning; ``all_versions`` shows each as its own row instead.

**Comparisons.** Each row names its reference (``compare_to``: the grid's, e.g. ``+swa`` → ``baseline``
and ``full-swa`` → ``full``; ``--baseline`` compares every row with one cell). The difference is
**paired by seed** within the same axes, and only when the two rows' settings differ in exactly what
the comparison changes (``versions.mismatch``; else no figures, and the ``note`` says what else
differs): ``d = test_acc(row) - test_acc(reference)`` for every seed completed in both, **counted in whole test images** when the test set's size is known (each result's
``test_images``; 10,000 for real CIFAR-10): the resolution the accuracies were measured at, so
float32 noise is never a spread. Its 95% t-interval, its two-sided paired t-test ``p_value``,
``p_adjusted`` by Holm over the comparisons of one axes setting (a model's rows, say), ``significant``
when ``p_adjusted < 0.05``, and ``mde_pp``: the smallest true difference this comparison detects with
80% power at α = 0.05, from its number of pairs and the spread of ``d`` (``significance.mde``).
``seeds_needed`` (with a target effect) is the number of seeds that detects the target with 80% power.
A comparison whose spread cannot be estimated (fewer than ``significance.MIN_PAIRS`` pairs, or the same
``d`` for every pair) has no p-value, hence no significance, MDE or seeds; its ``note`` says why.
The accuracy's own t-interval is clipped to [0, 1] (``test_acc_ci_clipped`` says when). A comparison
whose runs (the row's and its reference's) trained more than one code version gets that in its
``design_note`` (confounded, like a clash resolution), and runs that trained other code than their
submission's are named in the warnings (``cifar_hpc.study.code_version``).

**Cost** per run (means over the completed runs: ``wall_s_mean``, ``gpu_hours_mean``;
``gpu_hours_sum`` is the row's total; ``compute_s_mean``: device-seconds of training and
evaluation, ``efficiency.compute_seconds``) and ``cost_ratio``: ``compute_s_mean`` against the
reference's, only when both rows are complete. Wall time would compare process start-up too (the
first run of a local submit pays the imports: identical work read 0.64×).

The rows' types and the JSON contract: ``cifar_hpc.report.table``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from cifar_hpc.base.errors import UserError
from cifar_hpc.cluster.slurm import JobsView
from cifar_hpc.report import significance
from cifar_hpc.report.efficiency import compute_seconds, study_efficiency
from cifar_hpc.report.grouping import (
    AxesKey,
    Group,
    assign_references,
    axes_key,
    axes_order,
    design_note,
    group_runs,
    model_order,
)
from cifar_hpc.report.study_design import trick_lines
from cifar_hpc.report.table import CONFIDENCE, GENERATED, METRICS, NOT_DONE, ROW_FIELDS, Row, Summary
from cifar_hpc.study.code_version import code_mix, flagged_warning
from cifar_hpc.study.plan import run_label
from cifar_hpc.study.recorded import RecordedRun, Study
from cifar_hpc.study.run_state import RunState
from cifar_hpc.study.states import RunStatus, classify_all, count_states
from cifar_hpc.training.results import RESULT_FILE, is_number

__all__ = ["CONFIDENCE", "GENERATED", "NOT_DONE", "Row", "Summary", "aggregate"]  # the types live in table.py

# --- the numbers of one row -----------------------------------------------------------------------


def _completed(group: Group, warnings: list[str]) -> dict[int, dict[str, Any]]:
    """seed -> result of the row's completed runs (the newest of duplicates, with a warning)."""
    by_seed: dict[int, list[RecordedRun]] = {}
    for s in group.statuses:
        if s.state is RunState.COMPLETED and s.run.seed is not None:
            by_seed.setdefault(int(s.run.seed), []).append(s.run)
    chosen = {}
    for seed, runs in sorted(by_seed.items()):
        runs.sort(key=lambda r: (str(r.result.get("finished_at") or ""), r.run_id))
        if len(runs) > 1:
            warnings.append(
                f"{len(runs)} completed runs of {run_label(group.cell, dict(group.axes).get('model'), seed, dict(group.axes))}"
                f" ({', '.join(r.run_id for r in runs)}): "
                f"using the last finished, {runs[-1].run_id}"
            )
        chosen[seed] = {**runs[-1].result, "run_id": runs[-1].run_id}
    return chosen


CIFAR10_TEST_IMAGES = 10_000
"""CIFAR-10's test batch: the size of real-data results written before ``test_images`` was recorded."""


def test_images(results: Sequence[dict[str, Any]]) -> int | None:
    """The size of the test set the results were scored on, when every one says (or is real
    CIFAR-10) and they agree; None otherwise (accuracies are then compared as recorded)."""
    sizes = set()
    for r in results:
        size = r.get("test_images")
        if not (isinstance(size, int) and size > 0):
            size = CIFAR10_TEST_IMAGES if r.get("data") == "cifar10" else None
        sizes.add(size)
    return sizes.pop() if len(sizes) == 1 else None


def _accuracies(results: Sequence[dict[str, Any]], images: int | None) -> list[float]:
    """Test accuracies, at the test set's resolution (whole images) when its size is known."""
    acc = significance.on_grid([float(r["test_acc"]) for r in results], images)
    return [float(a) for a in (acc if images is None else acc / images)]


def _mean_ci(values: Sequence[float], confidence: float) -> tuple[float | None, float | None, bool]:
    """The t-interval of the mean accuracy, clipped to [0, 1] (and whether it had to be)."""
    if len(values) < 2:
        return None, None, False
    a = np.asarray(values, dtype=float)
    se = float(a.std(ddof=1) / math.sqrt(len(a)))
    if se == 0:
        return float(a.mean()), float(a.mean()), False
    low, high = stats.t.interval(confidence, len(a) - 1, loc=float(a.mean()), scale=se)
    return max(float(low), 0.0), min(float(high), 1.0), bool(low < 0 or high > 1)


def _metric(results: Sequence[dict[str, Any]], key: str, how: str) -> float | None:
    values = [float(r[key]) for r in results if is_number(r.get(key))]
    return float(getattr(np, how)(values)) if values else None


def _comparison(
    mine: dict[int, dict[str, Any]],
    theirs: dict[int, dict[str, Any]] | None,
    reference: str | None,
    confidence: float,
    target_effect_pp: float | None,
    mismatch: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "delta_mean": None,
        "delta_ci_low": None,
        "delta_ci_high": None,
        "delta_n_pairs": 0,
        "delta_sd": None,
        "p_value": None,
        "mde_pp": None,
        "seeds_needed": None,
    }
    if reference is None:
        return {**out, "note": "reference"}
    if mismatch is not None:  # it and its reference differ in more than the comparison says
        return {**out, "note": mismatch}
    if not mine:
        return {**out, "note": "no completed run"}
    if theirs is None:
        return {**out, "note": f"no completed run of {reference}"}
    seeds = sorted(set(mine) & set(theirs))
    pairs = [mine[s] for s in seeds] + [theirs[s] for s in seeds]
    images = test_images(pairs)
    sizes = {r.get("test_images") for r in pairs} - {None}
    if len(sizes) > 1:
        return {**out, "note": f"test sets of {' and '.join(map(str, sorted(sizes)))} images: no comparison"}
    test = significance.paired_test(
        [mine[s]["test_acc"] for s in seeds], [theirs[s]["test_acc"] for s in seeds], confidence, images
    )
    mde = significance.mde(test.n, test.sd) if test.tested else None
    needed = significance.seeds_needed(target_effect_pp / 100, test.sd) if target_effect_pp and test.tested else None
    return {
        "delta_mean": test.mean,
        "delta_ci_low": test.ci_low,
        "delta_ci_high": test.ci_high,
        "delta_n_pairs": test.n,
        "delta_sd": test.sd,
        "p_value": test.p_value,
        "mde_pp": None if mde is None else 100 * mde,
        "seeds_needed": needed,
        "note": test.note,
    }


def _compute_mean(results: Sequence[dict[str, Any]]) -> float | None:
    """Training and evaluation device-seconds per run; None unless every run recorded them."""
    seconds = [compute_seconds(r) for r in results]
    return float(np.mean(seconds)) if seconds and None not in seconds else None


def _cost_ratio(row: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    """Training and evaluation device-seconds per run over the reference's, process start-up left out
    (the first run of a local submit pays the imports); complete rows only."""
    if ref is None or row["mismatch"] or not (row["n"] == row["expected"] > 0 and ref["n"] == ref["expected"] > 0):
        return None
    if (row["compute_s_mean"] or 0) > 0 and (ref["compute_s_mean"] or 0) > 0:
        return row["compute_s_mean"] / ref["compute_s_mean"]
    return None


def aggregate(
    study: Study,
    jobs: JobsView | None = None,
    *,
    baseline: str | None = None,
    target_effect_pp: float | None = None,
    confidence: float = CONFIDENCE,
    where: dict[str, Any] | None = None,
    all_versions: bool = False,
) -> Summary:
    """The table: one row per setting, seeds aggregated, paired differences from each row's reference.

    ``baseline`` compares every row with that cell (``UserError`` when the study has no such cell);
    ``target_effect_pp`` adds ``seeds_needed``; ``where`` (``versions.parse_where``) keeps only the runs with
    those settings; ``all_versions`` makes each version of a cell its own row."""
    statuses = classify_all(study, jobs)
    warnings = list(study.warnings) + [w for w in [flagged_warning(study.runs.values())] if w]
    groups, left_out = group_runs(statuses, warnings, where=where, all_versions=all_versions)
    cells = {g.name for g in groups}
    if baseline is not None and baseline not in cells:
        raise UserError(f"--baseline {baseline!r} is not a cell of this study; cells: {', '.join(sorted(cells))}")
    by_key = {(g.axes, g.cell): g for g in groups}
    assign_references(groups, study, baseline)
    completed = {(g.axes, g.cell): _completed(g, warnings) for g in groups}

    records: dict[tuple[AxesKey, str], dict[str, Any]] = {}
    for g in groups:
        key = (g.axes, g.cell)
        results = list(completed[key].values())
        images = test_images(results)
        acc = _accuracies(results, images)
        by_state = Counter(s.state for s in g.statuses)
        ref_key = (g.axes, g.compare_to)
        theirs = completed.get(ref_key) if g.compare_to is not None and ref_key in by_key else None
        low, high, clipped = _mean_ci(acc, confidence)
        records[key] = {
            "model": dict(g.axes).get("model"),
            "axes": dict(g.axes),
            "cell": g.cell,
            "compare_to": g.compare_to,
            "is_baseline": g.compare_to is None,
            "n": len(acc),
            "expected": len(g.statuses),
            "seeds": sorted(completed[key]),
            "run_ids": [completed[key][s]["run_id"] for s in sorted(completed[key])],
            "test_images": images,
            "test_acc_mean": float(np.mean(acc)) if acc else None,
            "test_acc_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
            "test_acc_ci_low": low,
            "test_acc_ci_high": high,
            "test_acc_ci_clipped": clipped,
            **_comparison(completed[key], theirs, g.compare_to, confidence, target_effect_pp, g.mismatch),
            "mismatch": g.mismatch,
            "design_note": _joined(design_note(g, by_key.get(ref_key)), _code_mix(study, completed[key], theirs))
            if g.compare_to is not None
            else None,
            **{name: _metric(results, metric, how) for metric, (name, how) in METRICS.items()},
            "gpu_hours_sum": _metric(results, "gpu_hours", "sum"),
            "compute_s_mean": _compute_mean(results),
            "n_failed": by_state[RunState.FAILED],
            "n_running": sum(n for state, n in by_state.items() if state.in_progress),
            "n_missing": by_state[RunState.MISSING] + by_state[RunState.UNKNOWN],
            "n_corrupt": by_state[RunState.CORRUPT],
        }
    for key, record in records.items():
        record["cost_ratio"] = _cost_ratio(record, records.get((key[0], record["compare_to"])))
    _adjust(records.values(), 1 - confidence)
    rows = [Row(**_clean({name: record.get(name) for name in ROW_FIELDS})) for record in records.values()]
    rows.sort(key=lambda r: _row_order(r, records))
    if rows and study.baseline_cell not in cells and baseline is None:  # cells: names, not version labels
        warnings.append(f"no row is the baseline cell {study.baseline_cell!r} (choose one with --baseline)")
    summary = _summary(study, jobs, statuses, rows, warnings, left_out, confidence, target_effect_pp)
    summary.efficiency = study_efficiency(study, jobs, statuses)
    summary.tricks = trick_lines(study, rows)  # what each trick changed: SWA's start and LR, clashes
    return summary


def _code_mix(study: Study, *rows: dict[int, dict[str, Any]] | None) -> str | None:
    """A comparison whose runs (the row's and its reference's) trained more than one code is confounded
    by the code (``code_version.code_mix``)."""
    return code_mix(study.runs[r["run_id"]] for row in rows if row for r in row.values() if r["run_id"] in study.runs)


def _joined(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _adjust(records: Any, alpha: float) -> None:
    """Holm over the comparisons of each axes setting; ``significant`` on the adjusted p-value."""
    families: dict[AxesKey, list[dict[str, Any]]] = {}
    for record in records:
        families.setdefault(axes_key(record["axes"]), []).append(record)
    for family in families.values():
        for record, adjusted in zip(family, significance.holm([r["p_value"] for r in family])):
            record["p_adjusted"] = adjusted
            record["significant"] = None if adjusted is None else bool(adjusted < alpha)


def _depth(record: dict[str, Any], records: dict, axes: AxesKey) -> int:
    """How many references lie above a row (0: a reference, 1: vs a reference, ...)."""
    depth, seen, cell = 0, set(), record["compare_to"]
    while cell is not None and cell not in seen and (axes, cell) in records:
        seen.add(cell)
        depth, cell = depth + 1, records[(axes, cell)]["compare_to"]
    return depth + (cell is not None and (axes, cell) not in records)


def _row_order(row: Row, records: dict) -> tuple:
    axes = axes_key(row.axes)
    return (
        axes_order(axes),
        _depth(records[(axes, row.cell)], records, axes),
        row.compare_to or "",
        row.delta_mean is None,
        -(row.delta_mean or 0.0),
        row.cell,
    )


def _summary(study, jobs, statuses, rows, warnings, left_out, confidence, target_effect_pp) -> Summary:
    def ident(s: RunStatus) -> dict[str, Any]:
        run = s.run  # axes: the non-seed axis values, so that a listed run is named as every line names it
        return {"run_id": run.run_id, "model": run.model, "cell": run.cell, "seed": run.seed, "axes": run.axes}

    def job(s: RunStatus) -> str | None:
        return s.run.slurm.job if s.run.slurm else None

    gone = {x.status.run.run_id for x in left_out}
    ordered = sorted(
        (s for s in statuses if s.run.run_id not in gone),
        key=lambda s: (
            model_order(s.run.model or ""),
            s.run.cell != study.baseline_cell,
            s.run.cell or "",
            -1 if s.run.seed is None else s.run.seed,
            s.run.run_id,
        ),
    )
    return Summary(
        grid=study.grid,
        data=study.data,
        baseline_cell=study.baseline_cell,
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
        counts=count_states(s for s in statuses if s.run.run_id not in gone),
        warnings=warnings,
        slurm_notes=list(jobs.notes) if jobs else [],
        confidence=confidence,
        other_versions=[{**ident(x.status), "state": x.status.state.value, "version": x.version} for x in left_out],
        target_effect_pp=target_effect_pp,
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
