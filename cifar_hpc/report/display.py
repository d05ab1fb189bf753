"""The comparison table as a reader sees it, in whichever text format: its columns (header, how a
row becomes the cell's text, alignment, and the order in which columns are given up on a narrow
terminal), the legend, and the lists of runs outside the table. The terminal, Markdown
(``cifar_hpc.report.render``) and LaTeX (``cifar_hpc.report.latex``) renderers share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cifar_hpc.report.efficiency import efficiency_line
from cifar_hpc.report.significance import MIN_PAIRS, NO_TEST
from cifar_hpc.report.table import Row, Summary
from cifar_hpc.study.plan import run_label


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}"


def _signed_pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _accuracy(row: Row) -> str:
    if row.test_acc_mean is None:
        return "—"
    return _pct(row.test_acc_mean) + (f" ± {_pct(row.test_acc_std)}" if row.test_acc_std is not None else "")


def delta_text(row: Row, mark: str = " *") -> str:
    """``+0.96 [+0.31, +1.61] *``: the paired difference, its interval, and the (adjusted) significance mark."""
    if row.compare_to is None:
        return "reference"
    if row.delta_mean is None:
        return row.note or "—"
    text = _signed_pp(row.delta_mean)
    if row.delta_ci_low is not None:
        text += f" [{_signed_pp(row.delta_ci_low)}, {_signed_pp(row.delta_ci_high)}]"
        if row.significant:
            text += mark
    if row.note and not row.note.endswith(NO_TEST):  # why there is no test: in the p adj column
        text += f" ({row.note})"
    if row.design_note:
        text += " †"
    return text


def _p(row: Row) -> str:
    """The adjusted p-value, or why there is none (``1 pair``, ``no spread``)."""
    x = row.p_adjusted
    if x is None:
        return row.note.removesuffix(NO_TEST) if row.note and row.note.endswith(NO_TEST) else "—"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def resolution(s: Summary) -> str:
    """What the accuracies are compared at: whole images of the test set, when its size is known."""
    sizes = {r.test_images for r in s.rows if r.n}
    known = sorted(n for n in sizes if n is not None)
    if not known:
        return "the test set's size is not recorded: accuracies compared as recorded (float32)"
    if len(sizes) == 1:
        return (
            f"accuracies counted in whole test images (1 of {known[0]:,} = {100 / known[0]:g} pp) before any statistic"
        )
    unknown = "; some rows' size not recorded" if None in sizes else ""
    return f"accuracies counted in whole images of each row's test set ({', '.join(f'{n:,}' for n in known)}){unknown}"


def _cost_meaning(s: Summary) -> str:
    if s.used_gpu:
        return (
            "cost × = GPU-seconds of training and evaluation per run relative to the reference "
            "(process start-up left out; complete rows only)"
        )
    return (
        "cost × = CPU-seconds of training and evaluation per run relative to the reference (process start-up "
        "left out; complete rows only); no GPU was used: on a shared CPU machine these times are noise, not a cost"
    )


def _no_test(s: Summary) -> str | None:
    if not any((r.note or "").endswith(NO_TEST) for r in s.rows):
        return None
    return (
        f"a reason in place of p adj (1 pair, no spread): no test, hence no *, MDE or seeds, with fewer "
        f"than {MIN_PAIRS} seed pairs or the same Δ (in whole images) for every seed: no spread to test"
    )


@dataclass(frozen=True)
class Column:
    header: str
    text: Callable[[Row, str], str]
    """The cell's text for a row, given the significance mark of the format."""
    label: bool = False
    """A row label (model, cell): left-aligned everywhere, never wrapped; values are right-aligned."""
    ragged: bool = False
    """Left-aligned on the terminal too (text of varying shape, such as an interval)."""
    wraps: bool = True
    """A narrow terminal may wrap it at spaces (a label or ``93.10 ± 0.22`` stays on one line)."""
    drop_rank: int | None = None
    """On a narrow terminal columns are given up in this order (1 first), after those empty in every
    row; None: always shown."""
    statistic: bool = False
    """Given up only when even wrapped it does not fit (``render.fit_columns``): the table's point."""
    paper: bool = True
    """In the LaTeX table (a page's width: the comparison and its price, not the telemetry)."""
    meaning: Callable[[Summary], str | None] | None = None
    """What the column says, for the legend (which explains only the columns shown)."""


def _fixed(text: str) -> Callable[[Summary], str]:
    return lambda s: text


COLUMNS = (
    Column("model", lambda r, m: r.model, label=True),
    Column("setting", lambda r, m: r.setting, label=True),
    Column("cell", lambda r, m: r.cell, label=True),
    Column("vs", lambda r, m: r.compare_to or "—", label=True),
    Column("n", lambda r, m: f"{r.n}/{r.expected}", meaning=_fixed("n = completed/expected runs")),
    Column(
        "test acc %",
        lambda r, m: _accuracy(r),
        wraps=False,
        meaning=lambda s: f"acc in %, mean ± std over seeds; {resolution(s)}",
    ),
    Column(
        "Δ pp [95% CI]",
        delta_text,
        ragged=True,
        meaning=lambda s: (
            "Δ = difference from the row's reference (vs: the same model and axes) in percentage points, "
            f"paired by seed, [{round(s.confidence * 100)}% CI, t-distribution]; * = p adj < {s.alpha:g}"
        ),
    ),
    Column(
        "p adj",
        lambda r, m: _p(r),
        drop_rank=12,
        statistic=True,
        meaning=_fixed(
            "p adj = paired t-test p-value, Holm-adjusted over the comparisons of one model and axes setting"
        ),
    ),
    Column(
        "MDE pp",
        lambda r, m: _num(r.mde_pp, ".2f"),
        drop_rank=11,
        statistic=True,
        meaning=lambda s: f"MDE = smallest difference these seeds detect with 80% power at α = {s.alpha:g}",
    ),
    Column(
        "seeds for target",
        lambda r, m: _num(r.seeds_needed, "d"),
        drop_rank=10,
        statistic=True,
        meaning=lambda s: f"seeds for {s.target_effect_pp:g} pp = seeds needed to detect that effect with 80% power",
    ),
    Column("cost ×", lambda r, m: _ratio(r.cost_ratio), drop_rank=9, meaning=_cost_meaning),
    Column(
        "wall/run",
        lambda r, m: duration(r.wall_s_mean),
        drop_rank=8,
        paper=False,
        meaning=_fixed("wall/run = wall time per run, process start-up included"),
    ),
    Column(
        "GPU-h/run",
        lambda r, m: _num(r.gpu_hours_mean or None, ".3f"),  # 0: CPU runs, which held no GPU
        drop_rank=7,
        meaning=_fixed("GPU-h/run = GPU-hours held per run"),
    ),
    Column("best val %", lambda r, m: _pct(r.best_val_acc_mean), drop_rank=6, paper=False),
    Column("epochs", lambda r, m: _num(r.epochs_run_mean, ".1f"), drop_rank=5, paper=False),
    Column("img/s", lambda r, m: _num(r.train_images_per_s_mean, ",.0f"), drop_rank=4, paper=False),
    Column(
        "util %",
        lambda r, m: _num(r.gpu_util_mean, ".0f"),
        drop_rank=3,
        paper=False,
        meaning=_fixed("util/p95 = GPU utilisation mean/95th percentile"),
    ),
    Column("p95 %", lambda r, m: _num(r.gpu_util_p95, ".0f"), drop_rank=1, paper=False),
    Column(
        "peak MiB",
        lambda r, m: _num(r.gpu_mem_peak_mib, ",.0f"),
        drop_rank=2,
        paper=False,
        meaning=_fixed("peak MiB = max GPU memory"),
    ),
    Column("LR found", lambda r, m: _num(r.lr_found_mean, ".3g"), drop_rank=1, paper=False),
)


def columns_for(s: Summary) -> tuple[Column, ...]:
    """The displayed columns: ``setting`` only when the study has axes besides model and seed,
    ``seeds for target`` only with a target effect (renamed after it)."""
    chosen = []
    for column in COLUMNS:
        if column.header == "setting" and not any(r.setting for r in s.rows):
            continue
        if column.header == "seeds for target":
            if s.target_effect_pp is None:
                continue
            column = replace(column, header=f"seeds for {s.target_effect_pp:g} pp")
        chosen.append(column)
    return tuple(chosen)


def legend(s: Summary, columns: Sequence[Column] | None = None) -> str:
    """What the shown columns mean (and when a statistic is withheld), one clause each."""
    columns = columns_for(s) if columns is None else columns
    parts = [c.meaning(s) if c.meaning is not None else None for c in columns]
    statistics = [i for i, c in enumerate(columns) if c.statistic]
    if statistics:  # after what the statistics mean: when they are withheld
        parts.insert(statistics[-1] + 1, _no_test(s))
    return "; ".join(p for p in parts if p)


def is_empty(cells: Sequence[str]) -> bool:
    """A column with nothing to say in any row (GPU columns of CPU runs)."""
    return all(cell in ("—", "") for cell in cells)


def display_rows(s: Summary, mark: str = " *", columns: Sequence[Column] | None = None) -> list[list[str]]:
    """The table as text cells (shared by the rich, Markdown and LaTeX renderers)."""
    return [[c.text(row, mark) for c in columns or columns_for(s)] for row in s.rows]


def list_lines(s: Summary) -> list[tuple[str, list[str]]]:
    """The study's efficiency and the runs outside the table, as (heading, one-line items)."""

    def who(x: dict[str, Any]) -> str:
        return f"{x['run_id']} {run_label(x['cell'], x['model'], x['seed'], x.get('axes'))}"

    sections: list[tuple[str, list[str]]] = []
    if s.efficiency is not None:
        sections.append(("Efficiency", [efficiency_line(s.efficiency).removeprefix("efficiency: ")]))
    if s.failed:
        sections.append(
            (
                f"Failed ({len(s.failed)})",
                [f"{who(x)}: {x['error']}" + (f" (log: {x['log']})" if x["log"] else "") for x in s.failed],
            )
        )
    if s.running:
        sections.append(
            (
                f"Running or queued ({len(s.running)})",
                [
                    f"{who(x)}: {x['state']}" + (f", Slurm job {x['slurm_job']}" if x["slurm_job"] else "")
                    for x in s.running
                ],
            )
        )
    if s.missing:
        sections.append((f"Missing ({len(s.missing)})", [f"{who(x)}: {x['note']}" for x in s.missing]))
    if s.tricks:
        sections.append((f"What the tricks changed, as configured ({len(s.tricks)})", list(s.tricks)))
    confounded = [r for r in s.rows if r.design_note]
    if confounded:
        sections.append(
            (
                f"Confounded comparisons, marked † ({len(confounded)})",
                [
                    f"{r.model} {r.setting + ' ' if r.setting else ''}{r.cell} vs {r.compare_to}: {r.design_note}"
                    for r in confounded
                ],
            )
        )
    if s.other_versions:
        sections.append(
            (
                f"Other versions of their cells, not in the table ({len(s.other_versions)})",
                [f"{who(x)}: {x['state']}, {x['version']}" for x in s.other_versions],
            )
        )
    if s.corrupt:
        sections.append(
            (f"Corrupt result.json, not counted ({len(s.corrupt)})", [f"{x['path']}: {x['reason']}" for x in s.corrupt])
        )
    if s.warnings:
        sections.append(("Warnings", list(s.warnings)))
    if s.slurm_notes:
        sections.append(("Slurm", list(s.slurm_notes)))
    return [(heading, [" ".join(str(line).split()) for line in lines]) for heading, lines in sections]  # one line each
