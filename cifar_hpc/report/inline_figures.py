"""The report's figures as SVG markup to put inline: the very plots ``collect --plot``/``--plot-cost``
draw (``cifar_hpc.report.plots``) and the learning curves (``cifar_hpc.report.curves``), saved as SVG
with text kept as text (small, sharp in print, searchable).

Several SVGs in one page share one id space: each figure's ids (and the references to them, clip
paths mostly) get the figure's name as a prefix, so that one figure never clips by another's path.
Matplotlib's metadata (its version, the date) is dropped: the report says when it was made.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cifar_hpc.base.errors import UserError
from cifar_hpc.report import curves, plots
from cifar_hpc.report.table import Summary


@dataclass(frozen=True)
class Figure:
    name: str
    """``effects``, ``cost``, ``curves``: its anchor and the prefix of its ids."""
    svg: str | None
    """The markup; None when there was nothing to draw."""
    why_not: str | None = None
    """Why there is no figure (``nothing to plot: ...``)."""


def _prefixed(svg: str, name: str) -> str:
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{name}-\1"', svg)
    svg = re.sub(r"url\(#", f"url(#{name}-", svg)
    return re.sub(r'href="#', f'href="#{name}-', svg)


def inline_svg(name: str, draw: Callable[[Path], Path]) -> Figure:
    """Run ``draw(path)`` (a plot function writing ``path``) and return the SVG as markup; a
    ``UserError`` (nothing to plot) becomes the figure's ``why_not``."""
    from matplotlib import rc_context

    with tempfile.TemporaryDirectory() as tmp, rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        try:
            path = draw(Path(tmp) / f"{name}.svg")
        except UserError as error:
            return Figure(name, None, str(error))
        return Figure(name, _prefixed(path.read_text(), name))


def study_figures(summary: Summary, root: Path) -> dict[str, Figure]:
    """The effects, the cost and the learning curves of the study, by name."""
    rows_curves = curves.row_curves(summary, root)

    def draw_curves(path: Path) -> Path:
        if not rows_curves:
            raise UserError("no learning curves: no completed run of the table has a logs/metrics.csv")
        return curves.plot_curves(rows_curves, path, summary.title, generated=summary.generated)

    return {
        "effects": inline_svg("effects", lambda path: plots.plot_effects(summary, path)),
        "cost": inline_svg("cost", lambda path: plots.plot_cost(summary, path)),
        "curves": inline_svg("curves", draw_curves),
    }
