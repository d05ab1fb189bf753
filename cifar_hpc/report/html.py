"""``cifar-hpc report``: a study as one self-contained HTML file, to open offline, send, print to PDF.

Everything is inside the file: the CSS, one small script (a button that saves the embedded JSON),
the figures as inline SVG (``inline_figures``), and the data as JSON. Its Content-Security-Policy
forbids every request (``default-src 'none'``; images only from ``data:``; the one script by its
hash), so a browser opening it asks no network for anything, and a report that tried would show
it in the console.

The numbers are ``collect``'s: the same ``Summary`` (``aggregate``), the same columns, cell texts
and legend (``display``), the same lists of runs outside the table; the figures are collect's plots.
Sections: the question and the design, the comparison table, effects and cost, learning curves,
every run (and every failure with the tail of its log), efficiency and queue wait, provenance, and
the study's JSON (``REPORT_SCHEMA``: ``summary`` is ``collect -f json``'s, ``study`` the study.json,
``runs`` the records of ``collect --runs``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from cifar_hpc.cluster.slurm import JobsView
from cifar_hpc.report import html_style
from cifar_hpc.report.against import HEADERS, render_against_rows, side_by_side
from cifar_hpc.report.curves import missing_logs
from cifar_hpc.report.display import columns_for, display_rows, legend, list_lines
from cifar_hpc.report.efficiency import efficiency_line
from cifar_hpc.report.html_runs import esc, failures, runs_table
from cifar_hpc.report.inline_figures import Figure, study_figures
from cifar_hpc.report.origins import Fact, all_facts
from cifar_hpc.report.run_table import run_records
from cifar_hpc.report.study_design import DesignRow, design_rows, layout_line, question
from cifar_hpc.report.table import Summary
from cifar_hpc.study.manifest import read_manifest
from cifar_hpc.study.recorded import Study
from cifar_hpc.study.states import classify_all

REPORT_SCHEMA = 1
GENERATED_BANNER = "GENERATED DATA: these accuracies say nothing about CIFAR-10"

SAVE_SCRIPT = """document.getElementById("save-json").addEventListener("click", function () {
  var text = document.getElementById("study-data").textContent;
  var link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
  link.download = document.body.dataset.study + "-report.json";
  link.click();
});"""


def csp(script: str) -> str:
    """No request of any kind; inline styles (matplotlib's SVG carries style attributes), data: images,
    and the one script by its hash."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def comparison_table(s: Summary) -> str:
    """collect's table: its columns, cell texts and legend; significant rows bold, confounded marked."""
    columns = columns_for(s)
    head = "".join(f'<th class="{"label" if c.label or c.ragged else "num"}">{esc(c.header)}</th>' for c in columns)
    body, previous = [], None
    for row, cells in zip(s.rows, display_rows(s, columns=columns)):
        classes = [c for c, on in (("sig", row.significant), ("confounded", row.design_note)) if on]
        if previous is not None and row.model != previous:
            classes.append("section")
        previous = row.model
        tds = "".join(
            f'<td class="{"label" if c.label or c.ragged else "num"}">{esc(text)}</td>'
            for c, text in zip(columns, cells)
        )
        body.append(f'<tr class="{" ".join(classes)}" data-cell="{esc(row.cell)}">{tds}</tr>')
    return (
        f'<div class="scroll"><table class="comparison"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        f'<p class="legend">{esc(legend(s, columns))}; bold: significant; † confounded comparison (why: below)</p>'
    )


def lists(s: Summary) -> str:
    """collect's lists of runs outside the table (efficiency, failed, running, missing, confounded, ...)."""
    parts = []
    for heading, lines in list_lines(s):
        items = "".join(f"<li>{esc(line)}</li>" for line in lines[:200])
        more = f"<li>... {len(lines) - 200} more (collect lists them all)</li>" if len(lines) > 200 else ""
        parts.append(f"<h3>{esc(heading)}</h3><ul>{items}{more}</ul>")
    return "".join(parts)


def design(question: str | None, layout: str, rows: list[DesignRow]) -> str:
    asked = (
        f'<p class="question">{esc(question)}</p>'
        if question
        else '<p class="quiet">The grid\'s description was not recorded (a study submitted before cifar-hpc recorded it).</p>'
    )
    lines = "".join(
        f'<tr class="{"confounded" if r.note else ""}"><td>{esc(r.panel)}</td><td>{esc(r.cell)}</td>'
        f"<td>{esc(r.reference or '—')}</td><td>{esc(r.changes)}</td>"
        f'<td>{esc("† " + r.note if r.note else "")}</td><td class="num">{esc(r.runs)}</td></tr>'
        for r in rows
    )
    return (
        f"{asked}<p>{esc(layout)}</p>"
        '<div class="scroll"><table class="design"><thead><tr><th>model, setting</th><th>cell</th><th>compared with</th>'
        '<th>what it changes</th><th>confounded</th><th class="num">runs</th></tr></thead>'
        f"<tbody>{lines}</tbody></table></div>"
    )


def figure(f: Figure, caption: str) -> str:
    if f.svg is None:
        return f'<p class="quiet">No figure: {esc(f.why_not)}</p>'
    return f'<figure id="figure-{f.name}">{f.svg}<figcaption>{esc(caption)}</figcaption></figure>'


def facts(groups: list[tuple[str, list[Fact]]]) -> str:
    out = []
    for heading, group in groups:
        items = "".join(
            f'<dt>{esc(f.name)}</dt><dd class="{"alarm" if f.alarm else ""}">{esc(f.value)}</dd>' for f in group
        )
        out.append(f'<h3>{esc(heading)}</h3><dl class="facts">{items}</dl>')
    return "".join(out)


def efficiency(s: Summary) -> str:
    if s.efficiency is None:
        return '<p class="quiet">Not known yet: no run has said how long it trained.</p>'
    numbers = s.efficiency.to_dict()
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in numbers.items())
    return (
        f'<p>{esc(efficiency_line(s.efficiency))}</p><dl class="facts">{rows}</dl>'
        '<p class="legend">train_s: device-seconds spent training; allocated_s: device-seconds held (Slurm\'s '
        "accounting, else the runs' wall time); queue wait: Start − Submit of each task attempt Slurm knows.</p>"
    )


def embedded(payload: dict[str, Any]) -> str:
    """The JSON inside a non-executed script element; ``<`` escaped so that no text can close it."""
    text = json.dumps(payload, indent=1, sort_keys=False, default=str).replace("<", "\\u003c")
    return f'<script type="application/json" id="study-data">{text}</script>'


def page(
    s: Summary,
    *,
    study_name: str,
    where: str,
    sections: list[tuple[str, str, str]],
    payload: dict[str, Any],
) -> str:
    """The whole document: head (CSP, style), banner, title, contents, sections, data, script."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    counts = ", ".join(f"{n} {state}" for state, n in s.counts.items() if n) or "no runs"
    banner = f'<div class="banner" role="alert">{esc(GENERATED_BANNER)}</div>' if s.generated else ""
    toc = "".join(f'<li><a href="#{anchor}">{esc(title)}</a></li>' for anchor, title, _ in sections)
    body = "".join(_section(anchor, title, html) for anchor, title, html in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(SAVE_SCRIPT)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(s.title)}</title><style>{html_style.CSS}</style></head>"
        f'<body data-study="{esc(study_name)}">{banner}'
        f'<header><h1>{esc(s.title)}</h1><p class="quiet">{esc(where)} · {esc(counts)} · report made {made} '
        f'<button id="save-json" type="button">Save the data (JSON)</button></p></header>'
        f'<nav class="toc"><ol>{toc}</ol></nav>{body}'
        f"{embedded(payload)}<script>{SAVE_SCRIPT}</script></body></html>\n"
    )


CAPTIONS = {
    "effects": "Each row's paired difference from its reference with its 95% CI (collect --plot).",
    "cost": "Accuracy against training and evaluation time per run, one point per row (collect --plot-cost).",
    "curves": "Learning curves per row: validation accuracy and training loss per epoch, from each run's "
    "logs/metrics.csv; the line is the mean over the row's seeds, the band runs from the lowest to the highest seed.",
}


def against_table(name: str, mine: Summary, theirs: Summary) -> str:
    """``collect A --against B``'s table: this study (A) beside ``name`` (B)."""
    rows = "".join(
        "<tr>"
        + "".join(f'<td class="{"label" if i < 3 else "num"}">{esc(c)}</td>' for i, c in enumerate(cells))
        + "</tr>"
        for cells in render_against_rows(side_by_side(mine, theirs))
    )
    head = "".join(f'<th class="{"label" if i < 3 else "num"}">{esc(h)}</th>' for i, h in enumerate(HEADERS))
    return (
        f"<p>A = this study, B = {esc(name)}: the same rows (model, axes, cell) of both, each side's numbers its own "
        "collect's; B − A of the mean test accuracy with Welch's 95% interval (different runs: not paired).</p>"
        f'<div class="scroll"><table class="against"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
    )


def build_report(
    study: Study, jobs: JobsView | None, summary: Summary, against: tuple[str, Summary] | None = None
) -> str:
    """The report of ``study`` (loaded), with what Slurm said (``jobs``) and collect's ``summary`` of it;
    ``against``: another study's name and summary, side by side (``collect --against``)."""
    statuses = classify_all(study, jobs)
    records = run_records(study, statuses, summary, jobs)
    figures = study_figures(summary, study.root)
    missing = missing_logs(summary, study.root)
    no_logs = f" {missing} completed run(s) have no logs/metrics.csv and are not in the curves." if missing else ""
    sections = [
        (
            "design",
            "Question and design",
            design(question(study), layout_line(study, summary), design_rows(study, summary)),
        ),
        ("table", "Comparison table", comparison_table(summary) + lists(summary)),
        (
            "effects",
            "Effects and cost",
            figure(figures["effects"], CAPTIONS["effects"]) + figure(figures["cost"], CAPTIONS["cost"]),
        ),
        ("curves", "Learning curves", figure(figures["curves"], CAPTIONS["curves"] + no_logs)),
        ("runs", f"Runs ({len(records)})", runs_table(records) + "<h3>Failures</h3>" + failures(study, summary.failed)),
        ("efficiency", "Efficiency and queue wait", efficiency(summary)),
        ("provenance", "Provenance", facts(all_facts(study))),
        ("data", "Data", DATA_NOTE),
    ]
    if against is not None:
        sections.insert(2, ("against", f"Against {against[0]}", against_table(against[0], summary, against[1])))
    payload = {
        "report_schema": REPORT_SCHEMA,
        "summary": summary.to_dict(),
        "study": read_manifest(study.root),
        "runs": records,
    }
    return page(summary, study_name=study.root.name, where=str(study.root), sections=sections, payload=payload)


DATA_NOTE = (
    "<p>Everything above is in this file as JSON, in a script element of id <code>study-data</code>: "
    "<code>summary</code> is <code>cifar-hpc collect -f json</code>'s table, <code>study</code> the study's "
    "study.json, <code>runs</code> one record per run (<code>cifar-hpc collect --runs</code>'s columns). "
    "The button at the top saves it; in Python: <code>json.loads(html.split('id=\"study-data\">')[1]"
    ".split('</script>')[0])</code>.</p>"
)
