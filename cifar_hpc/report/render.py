"""The comparison table as text: terminal (rich), Markdown, CSV, JSON, LaTeX.

Small pure functions, ``Summary`` -> text, pinned by golden files. The terminal and Markdown tables
are here; what they show (columns, legend, the lists of runs outside the table) is
``cifar_hpc.report.display``'s, which LaTeX (``cifar_hpc.report.latex``) shares; CSV and JSON carry raw
numbers (``cifar_hpc.report.raw_formats``). Generated-data results are labelled in every format
(title, caption, a ``data`` column in CSV, ``generated_data`` in JSON).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.report.display import COLUMNS, Column, columns_for, display_rows, is_empty, legend, list_lines
from cifar_hpc.report.latex import render_latex
from cifar_hpc.report.raw_formats import render_csv, render_json
from cifar_hpc.report.table import Summary

FORMATS = ("rich", "md", "csv", "json", "latex")


GAP = 2
"""Characters between two columns of the terminal table (rich's ``SIMPLE_HEAD`` box, right padding only)."""


def _width(column: Column, cells: Sequence[str], wrapped: bool) -> int:
    """Characters a column's text takes: its longest, or wrapped at spaces (its longest word) where
    the column may wrap."""
    texts = [column.header, *cells]
    if wrapped and column.wraps and not column.label:
        return max(len(word) for text in texts for word in text.split() or [""])
    return max(len(text) for text in texts)


def _table_width(widths: Sequence[int]) -> int:
    return sum(widths) + GAP * (len(widths) - 1)


def fit_columns(rows: Sequence[Sequence[str]], width: int, columns: Sequence[Column] = COLUMNS) -> list[int]:
    """Indices of the columns shown in ``width`` characters. Given up until the rest fits on one line
    each: the columns empty in every row first, then by ``drop_rank``; a statistic (``p adj``, ``MDE``,
    seeds) only when the rest does not fit even wrapped (rich then wraps the cells that can)."""
    cells = [[r[i] for r in rows] for i in range(len(columns))]
    empty = [i for i, c in enumerate(columns) if c.drop_rank and is_empty(cells[i])]
    ranked = sorted(
        (i for i, c in enumerate(columns) if c.drop_rank and i not in empty), key=lambda i: columns[i].drop_rank
    )
    keep = list(range(len(columns)))

    def fits(wrapped: bool) -> bool:
        return _table_width([_width(columns[j], cells[j], wrapped) for j in keep]) <= width

    for i in empty + ranked:
        if fits(wrapped=False) or (columns[i].statistic and fits(wrapped=True)):
            break
        keep.remove(i)
    return keep


def squeeze(cells: Sequence[Sequence[str]], columns: Sequence[Column], width: int) -> list[int]:
    """Each column's width in ``width`` characters: its longest text, the widest wrappable column
    narrowed first, down to its longest word (rich's own squeeze narrows headers past their words)."""
    widths = [_width(c, col, wrapped=False) for c, col in zip(columns, cells)]
    floors = [_width(c, col, wrapped=True) for c, col in zip(columns, cells)]
    while _table_width(widths) > width:
        room = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not room:
            break
        widest = max(room, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def full_width(s: Summary) -> int:
    """The width at which every column of the table shows unwrapped (what a file gets)."""
    columns = columns_for(s)
    rows = display_rows(s, columns=columns)
    return max(80, _table_width([_width(c, [r[i] for r in rows], False) for i, c in enumerate(columns)]))


def render_rich(s: Summary, width: int | None = None, console: Any = None) -> str:
    """The terminal table (rich). With ``console`` it prints there (colour, real width) and returns "".
    ``width`` None: as wide as every column needs (``-o table.txt``: a file hides nothing)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    width = width or full_width(s)
    out = console or Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    columns = columns_for(s)
    headers = [c.header for c in columns]
    rows = display_rows(s, columns=columns)
    keep = fit_columns(rows, out.width, columns)
    shown = [columns[i] for i in keep]
    table = Table(
        title=s.title,
        caption=legend(s, shown),
        caption_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, GAP - 1, 0, 0),  # the box's blank rule and the right padding: GAP between columns
    )
    widths = squeeze([[r[i] for r in rows] for i in keep], shown, out.width)
    for i, column_width in zip(keep, widths):
        table.add_column(
            headers[i],
            justify="left" if columns[i].label or columns[i].ragged else "right",
            no_wrap=not columns[i].wraps or columns[i].label,
            width=column_width,
        )
    previous = None
    for row, cells in zip(s.rows, rows):
        if previous is not None and row.model != previous:
            table.add_section()
        previous = row.model
        table.add_row(*(cells[i] for i in keep), style="bold" if row.significant else None)
    if s.generated:
        out.print(Text("GENERATED DATA: these accuracies say nothing about CIFAR-10", style="bold red"))
    out.print(table)
    hidden = [i for i in range(len(columns)) if i not in keep]
    empty = [headers[i] for i in hidden if is_empty([r[i] for r in rows])]
    narrow = [headers[i] for i in hidden if headers[i] not in empty]
    if hidden:
        said = [f"empty in every row: {', '.join(empty)}"] if empty else []
        said += [f"hidden at this terminal width: {', '.join(narrow)}"] if narrow else []
        out.print(Text(f"(not shown, {'; '.join(said)}; a file has every column: -o table.txt)"))
    for heading, lines in list_lines(s):
        out.print(Text(heading, style="bold"))
        for line in lines:
            out.print(Text(f"  {line}"))
    return buffer.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def render_md(s: Summary) -> str:
    """A Markdown document: title, legend, the table, then each list of runs outside it as a section."""
    lines = [f"# {s.title}", ""]
    if s.generated:
        lines += ["**GENERATED DATA: these accuracies say nothing about CIFAR-10.**", ""]
    lines += [_md_escape(legend(s)), ""]
    columns = columns_for(s)
    lines.append("| " + " | ".join(c.header for c in columns) + " |")
    lines.append("|" + "|".join("---" if c.label else "---:" for c in columns) + "|")
    for cells in display_rows(s, columns=columns):
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    for heading, items in list_lines(s):
        lines += ["", f"## {heading}", ""]
        lines += [f"- {_md_escape(item)}" for item in items]
    return "\n".join(lines) + "\n"


RENDERERS = {"rich": render_rich, "md": render_md, "csv": render_csv, "json": render_json, "latex": render_latex}


def render(s: Summary, fmt: str) -> str:
    """The table in one of ``FORMATS``; ``UserError`` for another."""
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}") from None
    return renderer(s)
