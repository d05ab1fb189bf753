"""Learning curves of a study: per row of the comparison table, its seeds averaged epoch by epoch, with a band.

Each run's ``logs/metrics.csv`` (``cifar_hpc.training.metrics_log``, ``results.METRICS_LOG``: Lightning's CSV, one line per
logged step, each metric in the lines where it was logged) gives ``val_acc`` and ``train_loss`` per
epoch. A resumed attempt logs again the epochs its predecessor ran after its last checkpoint: the
last value of an epoch is kept (the attempt whose training went on from there). The runs of a row
are the table's (``Row.run_ids``: its completed runs, one per seed), so the curves are of the runs
the numbers are of.

**The band** is the lowest to the highest seed at each epoch: with the 2-5 seeds a study has, a
t-interval of the mean would mostly show the t-distribution's tails, and min-max shows every seed.
The line is the mean over the seeds that reached that epoch (an early-stopped seed ends earlier).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_hpc.report.plots import PLOT_DPI, plot_path
from cifar_hpc.report.table import Summary
from cifar_hpc.training.results import METRICS_LOG

CURVE_METRICS = ("val_acc", "train_loss")
"""What is drawn, top to bottom: validation accuracy and the epoch's training loss."""


@dataclass
class Curve:
    """One row's curves: per metric, per epoch (0-based, as Lightning counts), mean and band over seeds."""

    panel: str
    """The row's model and setting (``resnet18``, ``resnet18 epochs=2``): one panel each, like the effects plot."""
    cell: str
    runs: int
    """Runs of the row that have a metrics log."""
    epochs: list[int] = field(default_factory=list)
    mean: dict[str, list[float]] = field(default_factory=dict)
    low: dict[str, list[float]] = field(default_factory=dict)
    high: dict[str, list[float]] = field(default_factory=dict)
    """NaN where no seed logged that metric at that epoch."""


def read_epochs(path: Path) -> dict[str, dict[int, float]]:
    """``metric -> {epoch: value}`` from one run's metrics CSV (empty when it is missing or unreadable)."""
    found: dict[str, dict[int, float]] = {name: {} for name in CURVE_METRICS}
    try:
        with open(path, newline="") as handle:
            for line in csv.DictReader(handle):
                epoch = line.get("epoch")
                if not epoch:
                    continue
                for name in CURVE_METRICS:
                    value = line.get(name)
                    if value:
                        try:
                            found[name][int(float(epoch))] = float(value)  # the last attempt's value wins
                        except ValueError:
                            continue
    except (OSError, csv.Error, UnicodeDecodeError):
        return {name: {} for name in CURVE_METRICS}
    return found


def metrics_csv(run_dir: Path) -> Path:
    return run_dir / METRICS_LOG


def _panel(model: str, setting: str) -> str:
    return f"{model} {setting}".strip()


def row_curves(summary: Summary, root: Path) -> list[Curve]:
    """One curve per row of the table that has at least one run with a metrics log, in the table's order."""
    curves = []
    for row in summary.rows:
        logs = [read_epochs(metrics_csv(root / run_id)) for run_id in row.run_ids]
        logs = [log for log in logs if any(log.values())]
        if not logs:
            continue
        epochs = sorted({e for log in logs for per_epoch in log.values() for e in per_epoch})
        curve = Curve(_panel(row.model, row.setting), row.cell, len(logs), epochs)
        for name in CURVE_METRICS:
            values = np.array([[log[name].get(e, math.nan) for e in epochs] for log in logs], dtype=float)
            with warnings.catch_warnings():  # an epoch no seed logged this metric at: NaN, not a warning
                warnings.simplefilter("ignore", RuntimeWarning)
                curve.mean[name] = np.nanmean(values, axis=0).tolist()
                curve.low[name] = np.nanmin(values, axis=0).tolist()
                curve.high[name] = np.nanmax(values, axis=0).tolist()
        curves.append(curve)
    return curves


def missing_logs(summary: Summary, root: Path) -> int:
    """Completed runs of the table without a metrics log (written by an older cifar-hpc, or removed)."""
    return sum(1 for row in summary.rows for run_id in row.run_ids if not metrics_csv(root / run_id).exists())


def _colors(cells: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(cells) <= 10 else "tab20"]
    return {cell: palette(i % palette.N) for i, cell in enumerate(cells)}


LABELS = {"val_acc": "validation accuracy %", "train_loss": "training loss (epoch mean)"}
SCALE = {"val_acc": 100.0, "train_loss": 1.0}


def plot_curves(curves: Sequence[Curve], path: str | Path, title: str, *, generated: bool = False) -> Path:
    """One column of panels per model and setting, a row per metric; per cell the mean over its seeds
    (a line, ``gid`` ``curve-<metric>-<i>``) and the lowest-to-highest seed (a band, ``band-<metric>-<i>``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: dict[str, list[tuple[int, Curve]]] = {}
    for i, curve in enumerate(curves):
        panels.setdefault(curve.panel, []).append((i, curve))
    cells = list(dict.fromkeys(c.cell for c in curves))
    colors = _colors(cells)
    fig = Figure(figsize=(max(6.0, 4.8 * len(panels)), 6.0), dpi=PLOT_DPI)
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(CURVE_METRICS), len(panels), squeeze=False, sharex="col")
    for column, (panel, members) in enumerate(panels.items()):
        for r, name in enumerate(CURVE_METRICS):
            ax = grid[r][column]
            for i, curve in members:
                x = np.array(curve.epochs) + 1
                scale = SCALE[name]
                band = ax.fill_between(
                    x,
                    np.array(curve.low[name]) * scale,
                    np.array(curve.high[name]) * scale,
                    alpha=0.15,
                    color=colors[curve.cell],
                    linewidth=0,
                )
                band.set_gid(f"band-{name}-{i}")
                (line,) = ax.plot(
                    x,
                    np.array(curve.mean[name]) * scale,
                    color=colors[curve.cell],
                    linewidth=1.4,
                    marker="o" if len(x) <= 12 else None,
                    markersize=2.5,
                    label=curve.cell,
                )
                line.set_gid(f"curve-{name}-{i}")
            ax.grid(alpha=0.3)
            if column == 0:
                ax.set_ylabel(LABELS[name], fontsize=8)
            if r == 0:
                ax.set_title(panel, fontsize=9)
            if r == len(CURVE_METRICS) - 1:
                ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
    handles = {}
    for ax in grid[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    columns = max(1, min(len(handles), round(fig.get_figwidth() / 1.6)))
    legend_rows = -(-len(handles) // columns)
    fig.set_figheight(fig.get_figheight() + 0.22 * legend_rows)
    bottom = (0.3 + 0.22 * legend_rows) / fig.get_figheight()
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncols=columns, fontsize=7, frameon=False)
    fig.suptitle(
        f"{title}\nmean over each row's seeds; band: lowest to highest seed",
        fontsize=9,
        color="red" if generated else "black",
    )
    fig.tight_layout(rect=(0, bottom, 1, 1))  # the legend below the panels
    path = plot_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PLOT_DPI)
    return path
