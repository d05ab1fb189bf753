"""Pictures of a study: each row's effect with its interval, accuracy against cost, and one run's GPU telemetry.

matplotlib's object API on the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from cifar_hpc.base.errors import UserError
from cifar_hpc.report.significance import NO_TEST
from cifar_hpc.report.table import Row, Summary
from cifar_hpc.training.gpu_monitor import read_samples  # Lightning-free reader of gpu.node*.jsonl
from cifar_hpc.training.results import is_number

PLOT_DPI = 100
PANEL_WIDTH_IN = 5.0


def effects_plot_size(n_panels: int, n_cells: int) -> tuple[int, int]:
    """Pixel size of ``plot_effects``'s PNG: a 5-inch panel per model and axes setting, 0.4 inch per row, 100 dpi."""
    width_in = PANEL_WIDTH_IN * max(1, n_panels)
    height_in = max(3.0, 1.4 + 0.4 * n_cells)
    return round(width_in * PLOT_DPI), round(height_in * PLOT_DPI)


def _panels(s: Summary) -> dict[str, list[Row]]:
    """The rows per model and axes setting, in the table's order (models in their usual order)."""
    panels: dict[str, list[Row]] = {}
    for row in s.rows:
        panels.setdefault(f"{row.model} {row.setting}".strip(), []).append(row)
    return panels


def plot_effects(s: Summary, path: str | Path) -> Path:
    """Each row's difference from its reference with its CI as error bars, one panel per model and
    axes setting; filled and coloured when significant after Holm's adjustment, † when confounded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(s)
    if not panels:
        raise UserError("nothing to plot: the study has no rows")
    compared = {name: [r for r in rows if r.compare_to is not None] for name, rows in panels.items()}
    n_cells = max((len(v) for v in compared.values()), default=0)
    width, height = effects_plot_size(len(panels), n_cells)
    fig = Figure(figsize=(width / PLOT_DPI, height / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, rows) in zip(axes, compared.items()):
        rows = list(reversed(rows))  # the table's first row on top
        ys = np.arange(len(rows))
        for y, r in zip(ys, rows):
            if r.delta_mean is None:
                ax.text(0, y, r.note or "no data", va="center", ha="center", fontsize=7, color="grey")
                continue
            x = 100 * r.delta_mean
            err = None if r.delta_ci_low is None else [[x - 100 * r.delta_ci_low], [100 * r.delta_ci_high - x]]
            color = "tab:green" if r.significant and x > 0 else "tab:red" if r.significant else "tab:grey"
            ax.errorbar([x], [y], xerr=err, fmt="o", color=color, mfc=color if r.significant else "white", capsize=3)
        labels = [f"{r.cell} vs {r.compare_to} ({_pairs(r)}){' †' if r.design_note else ''}" for r in rows]
        ax.set_yticks(ys, labels, fontsize=8)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        ax.set_xlabel(f"Δ test acc vs reference (pp, {round(100 * s.confidence)}% CI)", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    legend = (
        f"filled: significant after Holm (p adj < {s.alpha:g}); no test: hollow, the reason in its label; "
        "† confounded comparison"
    )
    title = wrap_to_width(f"{s.title}\n{legend}", width / PLOT_DPI, fontsize=9)
    fig.suptitle(title, color="red" if s.generated else "black", fontsize=9)
    return _save(fig, path)


def wrap_to_width(text: str, width_in: float, fontsize: float) -> str:
    """``text``'s lines wrapped to fit a figure ``width_in`` inches wide: a one-panel plot is 5 in, too
    narrow for the legend line in one piece (matplotlib cuts what does not fit)."""
    chars = max(20, int(width_in * 72 / (fontsize * 0.6)))  # an average glyph is ~0.6 em wide
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines())


def _pairs(row: Row) -> str:
    """``n=5``, or why the comparison has no test: ``1 pair: no test``, ``no spread: no test``."""
    return row.note if row.note and row.note.endswith(NO_TEST) else f"n={row.delta_n_pairs}"


COST_PLOT_SIZE = (900, 600)
"""Pixel size of ``plot_cost``'s PNG."""


def time_unit(seconds: float) -> tuple[str, float]:
    """A readable unit for an axis whose largest value is ``seconds``: (name, seconds per unit)."""
    if seconds < 120:
        return "s", 1.0
    if seconds < 2 * 3600:
        return "min", 60.0
    return "h", 3600.0


def plot_cost(s: Summary, path: str | Path) -> Path:
    """Accuracy (mean with its CI, clipped to 0-100%) against cost per run, one point per row: which
    tricks are worth their price. Cost is what ``cost ×`` compares: device-seconds of training and
    evaluation per run (GPU-seconds, else CPU-seconds: then the axis says they are noise on a shared
    machine), in s, min or h, whichever reads best."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = plot_path(path)
    rows = [r for r in s.rows if r.test_acc_mean is not None and r.compute_s_mean is not None]
    if not rows:
        raise UserError("nothing to plot: no row has a completed run that recorded its training and evaluation time")
    unit, per = time_unit(max(r.compute_s_mean for r in rows))
    fig = Figure(figsize=(COST_PLOT_SIZE[0] / PLOT_DPI, COST_PLOT_SIZE[1] / PLOT_DPI), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for (name, panel), color in zip(_panels(s).items(), _colors()):
        points = [r for r in panel if r in rows]
        for i, r in enumerate(points):
            x, y = r.compute_s_mean / per, 100 * r.test_acc_mean
            err = None if r.test_acc_ci_low is None else [[y - 100 * r.test_acc_ci_low], [100 * r.test_acc_ci_high - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", color=color, capsize=3, label=name if i == 0 else None)
            ax.annotate(r.cell, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    device = "GPU" if s.used_gpu else "CPU"
    noise = "" if s.used_gpu else " (no GPU used: on a shared machine, noise)"
    ax.set_xlabel(f"{device} time of training and evaluation per run, {unit}{noise}")
    clipped = any(r.test_acc_ci_clipped for r in rows)
    ax.set_ylabel(f"test accuracy % (mean, {round(100 * s.confidence)}% CI{', clipped to 0-100' if clipped else ''})")
    ax.set_title(
        f"{s.title}\naccuracy against cost, one point per row", color="red" if s.generated else "black", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _colors() -> list[str]:
    return [f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink", "olive", "cyan")] * 10


def plot_path(path: str | Path) -> Path:
    """The file a plot is written to: ``out/x`` gets ``.png`` (what matplotlib would add unasked);
    an ending matplotlib cannot write is the user's mistake (``UserError``), said before anything runs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if not path.suffix:
        return path.with_name(path.name + ".png")
    if path.suffix[1:].lower() not in FigureCanvasAgg.get_supported_filetypes():
        raise UserError(f"cannot write a picture as {path.name!r}: name it .png (or .pdf, .svg)")
    return path


def _save(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    path = plot_path(path)
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
    return _save(fig, path)
