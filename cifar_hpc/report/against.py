"""Two studies side by side (``collect A --against B``): the same rows of both (the same grid at two
code versions, on two clusters), the difference of their mean test accuracies with an interval, and
the rows present in one only.

Rows match by model, axes and cell (``Row.axes``, ``Row.cell``): each study's own ``aggregate`` made
them, so each side's numbers are its ``collect``'s. The difference is B − A of the rows' means; its
95% interval is Welch's (unequal variances, Welch-Satterthwaite degrees of freedom) from each row's
mean, standard deviation and number of seeds: the two studies' runs are different runs, not pairs,
even when their seeds are the same (on a GPU the same seed does not give the same run). No interval
with fewer than 2 seeds on a side, or no spread on both.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats

from cifar_hpc.report.grouping import axes_key
from cifar_hpc.report.table import CONFIDENCE, Row, Summary


@dataclass(frozen=True)
class SideBySide:
    model: str
    setting: str
    cell: str
    a_mean: float | None
    a_n: int
    b_mean: float | None
    b_n: int
    diff: float | None
    """B − A of the mean test accuracy (a fraction); None when a side has no completed run."""
    ci_low: float | None
    ci_high: float | None
    note: str | None
    """Why there is no interval, or ``only in A`` / ``only in B``."""


def welch(a: Row, b: Row, confidence: float) -> tuple[float | None, float | None, str | None]:
    """Welch's interval of ``b.mean - a.mean`` from the rows' summaries."""
    if a.n < 2 or b.n < 2 or a.test_acc_std is None or b.test_acc_std is None:
        return None, None, "fewer than 2 seeds on a side: no interval"
    va, vb = a.test_acc_std**2 / a.n, b.test_acc_std**2 / b.n
    if va + vb == 0:
        return None, None, "no spread on either side: no interval"
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    diff = b.test_acc_mean - a.test_acc_mean
    low, high = stats.t.interval(confidence, df, loc=diff, scale=se)
    return float(low), float(high), None


def side_by_side(a: Summary, b: Summary, confidence: float = CONFIDENCE) -> list[SideBySide]:
    """A's rows in A's order (each with B's match), then the rows only B has."""
    theirs = {(axes_key(r.axes), r.cell): r for r in b.rows}
    mine = {(axes_key(r.axes), r.cell) for r in a.rows}
    out = []
    for row in a.rows:
        other = theirs.get((axes_key(row.axes), row.cell))
        out.append(_pair(row, other, confidence))
    out += [_pair(None, r, confidence) for r in b.rows if (axes_key(r.axes), r.cell) not in mine]
    return out


def _pair(a: Row | None, b: Row | None, confidence: float) -> SideBySide:
    row = a or b
    diff = low = high = None
    if a is None or b is None:
        note = "only in B" if a is None else "only in A"
    elif a.test_acc_mean is None or b.test_acc_mean is None:
        note = "no completed run on a side"
    else:
        diff = b.test_acc_mean - a.test_acc_mean
        low, high, note = welch(a, b, confidence)
    return SideBySide(
        model=row.model,
        setting=row.setting,
        cell=row.cell,
        a_mean=a.test_acc_mean if a else None,
        a_n=a.n if a else 0,
        b_mean=b.test_acc_mean if b else None,
        b_n=b.n if b else 0,
        diff=diff,
        ci_low=low,
        ci_high=high,
        note=note,
    )


HEADERS = ("model", "setting", "cell", "A acc %", "n A", "B acc %", "n B", "B − A pp [95% CI, Welch]")


def cells(p: SideBySide) -> list[str]:
    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.2f}"

    diff = "—" if p.diff is None else f"{100 * p.diff:+.2f}"
    if p.ci_low is not None:
        diff += f" [{100 * p.ci_low:+.2f}, {100 * p.ci_high:+.2f}]"
    if p.note:
        diff += f" ({p.note})"
    return [p.model, p.setting, p.cell, pct(p.a_mean), str(p.a_n), pct(p.b_mean), str(p.b_n), diff]


def render_against(a: Summary, b: Summary, names: tuple[str, str], fmt: str) -> str:
    """The side-by-side table as text (aligned columns), Markdown, CSV or JSON (``fmt``: rich, md, csv, json)."""
    pairs = side_by_side(a, b)
    if fmt == "json":
        return json.dumps({"a": names[0], "b": names[1], "rows": [asdict(p) for p in pairs]}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(list(asdict(pairs[0])) if pairs else ["cell"])
        writer.writerows(["" if v is None else v for v in asdict(p).values()] for p in pairs)
        return buffer.getvalue()
    rows = [list(HEADERS), *map(cells, pairs)]
    title = f"A = {names[0]}, B = {names[1]}: test accuracy of the same rows"
    if fmt == "md":
        lines = [f"# {title}", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([title, *body]) + "\n"


def render_against_rows(pairs: list[SideBySide]) -> list[list[str]]:
    """The table's text cells (the report's section uses them)."""
    return [cells(p) for p in pairs]


def as_dicts(pairs: list[SideBySide]) -> list[dict[str, Any]]:
    return [asdict(p) for p in pairs]
