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
from cifar_hpc.report.display import COLUMNS, Column, columns_for, display_rows, legend, list_lines
from cifar_hpc.report.latex import render_latex
from cifar_hpc.report.raw_formats import render_csv, render_json
from cifar_hpc.report.table import Summary

FORMATS = ("rich", "md", "csv", "json", "latex")


def fit_columns(rows: Sequence[Sequence[str]], width: int, columns: Sequence[Column] = COLUMNS) -> list[int]:
    """Indices of the columns that fit in ``width`` characters (rich's box: 3 per column + 1)."""

    def need(i: int) -> int:
        return max([len(columns[i].header)] + [len(r[i]) for r in rows]) + 3

    keep = list(range(len(columns)))
    for i in sorted((i for i, c in enumerate(columns) if c.drop_rank), key=lambda i: columns[i].drop_rank):
        if sum(need(j) for j in keep) + 1 <= width:
            break
        keep.remove(i)
    return keep


def render_rich(s: Summary, width: int | None = 160, console: Any = None) -> str:
    """The terminal table (rich). With ``console`` it prints there (colour, real width) and returns ""."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    out = console or Console(file=buffer, width=width, color_system=None, force_terminal=False, legacy_windows=False)
    columns = columns_for(s)
    headers = [c.header for c in columns]
    rows = display_rows(s, columns=columns)
    keep = fit_columns(rows, out.width, columns)
    table = Table(title=s.title, caption=legend(s), caption_justify="left", title_style="bold")
    fits = sum(max([len(headers[i])] + [len(r[i]) for r in rows]) + 3 for i in keep) + 1 <= out.width
    for i in keep:
        table.add_column(headers[i], justify="left" if columns[i].label or columns[i].ragged else "right", no_wrap=fits)
    previous = None
    for row, cells in zip(s.rows, rows):
        if previous is not None and row.model != previous:
            table.add_section()
        previous = row.model
        table.add_row(*(cells[i] for i in keep), style="bold" if row.significant else None)
    if s.generated:
        out.print(Text("GENERATED DATA: these accuracies say nothing about CIFAR-10", style="bold red"))
    out.print(table)
    if len(keep) < len(columns):
        hidden = ", ".join(headers[i] for i in range(len(columns)) if i not in keep)
        out.print(Text(f"(hidden at this terminal width: {hidden}; widen the terminal or use --format md)"))
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
