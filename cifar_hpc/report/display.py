"""The comparison table as a reader sees it, in whichever text format: its columns (header, how a
row becomes the cell's text, alignment, and the order in which columns are given up on a narrow
terminal), the legend, and the lists of runs outside the table. The terminal, Markdown
(``cifar_hpc.report.render``) and LaTeX (``cifar_hpc.report.latex``) renderers share them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cifar_hpc.report.efficiency import efficiency_line
from cifar_hpc.report.table import Row, Summary


def legend(s: Summary) -> str:
    pct = round(s.confidence * 100)
    alpha = f"{s.alpha:g}"
    text = (
        f"acc in %, mean ± std over seeds; n = completed/expected runs; Δ = difference from the row's reference "
        f"(vs: the same model and axes) in percentage points, paired by seed, [{pct}% CI, t-distribution]; "
        f"p adj = paired t-test p-value, Holm-adjusted over the comparisons of one model and axes setting; "
        f"* = p adj < {alpha}; MDE = smallest difference these seeds detect with 80% power at α = {alpha}; "
        f"cost × = GPU-h per run relative to the reference (wall time when no GPU was used; complete rows only); "
        f"wall and GPU-h are per run; util/p95 = GPU utilisation mean/95th percentile, peak MiB = max GPU memory"
    )
    if s.target_effect_pp is not None:
        text += f"; seeds for {s.target_effect_pp:g} pp = seeds needed to detect that effect with 80% power"
    return text


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
    if row.note:
        text += f" ({row.note})"
    if row.design_note:
        text += " †"
    return text


def _p(x: float | None) -> str:
    return "—" if x is None else "<0.001" if x < 0.001 else f"{x:.3f}"


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


@dataclass(frozen=True)
class Column:
    header: str
    text: Callable[[Row, str], str]
    """The cell's text for a row, given the significance mark of the format."""
    label: bool = False
    """A row label (model, cell): left-aligned everywhere; values are right-aligned."""
    ragged: bool = False
    """Left-aligned on the terminal too (text of varying shape, such as an interval)."""
    drop_rank: int | None = None
    """On a narrow terminal columns are given up in this order (1 first); None: always shown."""


COLUMNS = (
    Column("model", lambda r, m: r.model, label=True),
    Column("setting", lambda r, m: r.setting, label=True),
    Column("cell", lambda r, m: r.cell, label=True),
    Column("vs", lambda r, m: r.compare_to or "—", label=True),
    Column("n", lambda r, m: f"{r.n}/{r.expected}"),
    Column("test acc %", lambda r, m: _accuracy(r)),
    Column("Δ pp [95% CI]", delta_text, ragged=True),
    Column("p adj", lambda r, m: _p(r.p_adjusted), drop_rank=12),
    Column("MDE pp", lambda r, m: _num(r.mde_pp, ".2f"), drop_rank=11),
    Column("seeds for target", lambda r, m: _num(r.seeds_needed, "d"), drop_rank=10),
    Column("cost ×", lambda r, m: _ratio(r.cost_ratio), drop_rank=9),
    Column("wall/run", lambda r, m: duration(r.wall_s_mean), drop_rank=8),
    Column("GPU-h/run", lambda r, m: _num(r.gpu_hours_mean, ".3f"), drop_rank=7),
    Column("best val %", lambda r, m: _pct(r.best_val_acc_mean), drop_rank=6),
    Column("epochs", lambda r, m: _num(r.epochs_run_mean, ".1f"), drop_rank=5),
    Column("img/s", lambda r, m: _num(r.train_images_per_s_mean, ",.0f"), drop_rank=4),
    Column("util %", lambda r, m: _num(r.gpu_util_mean, ".0f"), drop_rank=3),
    Column("p95 %", lambda r, m: _num(r.gpu_util_p95, ".0f"), drop_rank=1),
    Column("peak MiB", lambda r, m: _num(r.gpu_mem_peak_mib, ",.0f"), drop_rank=2),
    Column("LR found", lambda r, m: _num(r.lr_found_mean, ".3g"), drop_rank=1),
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
            column = Column(f"seeds for {s.target_effect_pp:g} pp", column.text, drop_rank=column.drop_rank)
        chosen.append(column)
    return tuple(chosen)


def display_rows(s: Summary, mark: str = " *", columns: Sequence[Column] | None = None) -> list[list[str]]:
    """The table as text cells (shared by the rich, Markdown and LaTeX renderers)."""
    return [[c.text(row, mark) for c in columns or columns_for(s)] for row in s.rows]


def list_lines(s: Summary) -> list[tuple[str, list[str]]]:
    """The study's efficiency and the runs outside the table, as (heading, one-line items)."""

    def who(x: dict[str, Any]) -> str:
        seed = "?" if x["seed"] is None else x["seed"]
        return f"{x['run_id']} {x['model'] or '?'} / {x['cell'] or '?'} / seed {seed}"

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
    if s.superseded:
        sections.append(
            (
                f"Superseded: runs of an earlier version of their cell, not in the table ({len(s.superseded)})",
                [f"{who(x)}: {x['state']}" for x in s.superseded],
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
