"""Pictures of a study: the effect of each cell with its interval, and one run's GPU telemetry.

matplotlib's object API on the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cifar_hpc.aggregate import Summary
from cifar_hpc.errors import UserError
from cifar_hpc.gpu_monitor import read_samples  # Lightning-free reader of gpu.node*.jsonl
from cifar_hpc.results import is_number

PLOT_DPI = 100
PANEL_WIDTH_IN = 5.0


def effects_plot_size(n_models: int, n_cells: int) -> tuple[int, int]:
    """Pixel size of ``plot_effects``'s PNG: a 5-inch panel per model, 0.4 inch per cell, at 100 dpi."""
    width_in = PANEL_WIDTH_IN * max(1, n_models)
    height_in = max(3.0, 1.4 + 0.4 * n_cells)
    return round(width_in * PLOT_DPI), round(height_in * PLOT_DPI)


def plot_effects(s: Summary, path: str | Path) -> Path:
    """Difference from the baseline per cell with its CI as error bars, one panel per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(r.model for r in s.rows))
    cells = [r for r in s.rows if not r.is_baseline]
    if not models:
        raise UserError("nothing to plot: the study has no rows")
    per_model = {m: [r for r in cells if r.model == m] for m in models}
    n_cells = max((len(v) for v in per_model.values()), default=0)
    width, height = effects_plot_size(len(models), n_cells)
    fig = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    for ax, model in zip(axes, models):
        rows = list(reversed(per_model[model]))  # best effect on top
        ys = np.arange(len(rows))
        for y, r in zip(ys, rows):
            if r.delta_mean is None:
                ax.text(0, y, r.note or "no data", va="center", ha="center", fontsize=7, color="grey")
                continue
            x = 100 * r.delta_mean
            if r.delta_ci_low is not None:
                err = [[x - 100 * r.delta_ci_low], [100 * r.delta_ci_high - x]]
            else:
                err = None
            color = "tab:green" if r.significant and x > 0 else "tab:red" if r.significant else "tab:grey"
            ax.errorbar([x], [y], xerr=err, fmt="o", color=color, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(ys, [f"{r.cell} (n={r.delta_n_pairs})" for r in rows], fontsize=8)
        ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        ax.set_xlabel(f"Δ test acc vs {s.baseline_cell} (pp, {round(100 * s.confidence)}% CI)")
        ax.set_title(model)
        ax.grid(axis="x", alpha=0.3)
    title = s.title
    fig.suptitle(title, color="red" if s.generated else "black", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    return path


GPU_PLOT_SIZE = (900, 600)
"""Pixel size of ``plot_gpu``'s PNG."""


def plot_gpu(run_dir: str | Path, path: str | Path, title: str | None = None) -> Path:
    """GPU utilisation and memory over time of one run, one line per (node, GPU), from its
    ``gpu.node*.jsonl`` files."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = read_samples(run_dir)
    if not samples:
        raise UserError(f"no GPU samples in {run_dir} (gpu.node*.jsonl): the run had no NVML or has not started")
    t0 = min(float(r["t"]) for r in samples if is_number(r.get("t")))
    fig = Figure(figsize=(GPU_PLOT_SIZE[0] / PLOT_DPI, GPU_PLOT_SIZE[1] / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    util_ax, mem_ax = fig.subplots(2, 1, sharex=True)
    series: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in samples:
        if is_number(r.get("t")):
            series.setdefault((str(r["host"]), int(r["gpu"])), []).append(r)
    for (host, gpu), rows in sorted(series.items()):
        rows.sort(key=lambda r: r["t"])
        minutes = np.array([(float(r["t"]) - t0) / 60 for r in rows])
        util = np.array([r["util_pct"] if is_number(r.get("util_pct")) else np.nan for r in rows], dtype=float)
        mem = np.array([r["mem_used_mib"] if is_number(r.get("mem_used_mib")) else np.nan for r in rows], dtype=float)
        if len(minutes) > 2:  # a requeued run's gap (no samples while it waited) is drawn as a gap
            steps = np.diff(minutes)
            gaps = np.flatnonzero(steps > 10 * max(float(np.median(steps)), 1e-9)) + 1
            minutes, util, mem = (np.insert(a, gaps, np.nan) for a in (minutes, util, mem))
        label = f"{host} gpu{gpu}"
        util_ax.plot(minutes, util, label=label, linewidth=1)
        mem_ax.plot(minutes, mem, label=label, linewidth=1)
    util_ax.set_ylabel("GPU utilisation %")
    util_ax.set_ylim(0, 105)
    mem_ax.set_ylabel("memory used MiB")
    mem_ax.set_xlabel("minutes since the first sample")
    util_ax.legend(fontsize=7, loc="lower right")
    util_ax.set_title(title or f"GPU telemetry of {Path(run_dir).name}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    return path
