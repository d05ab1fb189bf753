"""The report's per-run section: every run in one table (``run_table``'s records, the rows of
``collect --runs``), then each failure with its reason and the tail of its log.

A log is read from its end only (``TAIL_BYTES``): a study's logs can hold gigabytes; a pack's
shared log is cut to the run's own part (``run_logs.pack_part``), as ``cifar-hpc logs`` does.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cifar_hpc.report.display import duration
from cifar_hpc.study.plan import run_label
from cifar_hpc.study.recorded import Study
from cifar_hpc.study.run_logs import pack_part, run_log

TAIL_LINES = 25
TAIL_BYTES = 64 * 1024
MOST_TAILS = 100
"""Failures shown with their log's tail; more are listed by id (``cifar-hpc logs RUN`` shows each)."""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


RUN_HEADERS = (
    ("run", "label"),
    ("model", "label"),
    ("cell", "label"),
    ("seed", "num"),
    ("state", "label"),
    ("test acc %", "num"),
    ("epochs", "num"),
    ("wall", "num"),
    ("GPU-h", "num"),
    ("util %", "num"),
    ("attempts", "num"),
    ("queue wait", "num"),
    ("code", "label"),
)


def _cells(r: dict[str, Any]) -> list[str]:
    epochs = (
        "—" if r["epochs_run"] is None else f"{r['epochs_run']}/{r['epochs']}" if r["epochs"] else str(r["epochs_run"])
    )
    code = r["code"] or "—"
    if r["code_changed"]:
        code = f"⚠ {code} (submitted {r['submitted_code']})"
    return [
        r["run_id"],
        r["model"] or "?",
        r["cell"] or "?",
        "?" if r["seed"] is None else str(r["seed"]),
        r["state"] + ("" if r["in_table"] or r["state"] != "completed" else " (not in table)"),
        _pct(r["test_acc"]),
        epochs,
        duration(r["wall_s"]),
        _num(r["gpu_hours"] or None, ".3f"),
        _num(r["gpu_util_mean"], ".0f"),
        str(r["attempts"]) if r["attempts"] else "—",
        duration(r["queue_wait_s"]),
        code,
    ]


def runs_table(records: Sequence[dict[str, Any]]) -> str:
    """Every run, one row each; failed runs and runs whose code changed stand out."""
    head = "".join(f'<th class="{kind}">{esc(name)}</th>' for name, kind in RUN_HEADERS)
    lines = []
    for r in records:
        classes = [f"state-{r['state']}"] + (["code-changed"] if r["code_changed"] else [])
        cells = "".join(f'<td class="{kind}">{esc(text)}</td>' for (_, kind), text in zip(RUN_HEADERS, _cells(r)))
        lines.append(f'<tr class="{" ".join(classes)}" data-run="{esc(r["run_id"])}">{cells}</tr>')
    return (
        f'<div class="scroll"><table class="runs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table></div>"
    )


def log_tail(study: Study, run_id: str, lines: int = TAIL_LINES) -> tuple[str | None, list[str]]:
    """The run's log file (rank 0's) and its last ``lines`` lines; (None, []) when there is none."""
    run = study.runs.get(run_id)
    if run is None:
        return None, []
    log = run_log(study, run)
    if not log.files or not log.files[0].is_file():
        return (str(log.files[0]) if log.files else None), []
    path = log.files[0]
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
        text = handle.read().decode(errors="replace").splitlines()
    if log.pack:
        text, _ = pack_part(text, run.run_id)
    return str(path), text[-lines:]


def _short(path: str | None) -> str:
    if not path:
        return "no log recorded"
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return relative if len(relative) < len(path) else path


def failures(study: Study, failed: Sequence[dict[str, Any]]) -> str:
    """Each failed run: who, why, where its log is, and the log's last lines."""
    if not failed:
        return '<p class="quiet">No run failed.</p>'
    parts = []
    for i, x in enumerate(failed):
        who = f"{x['run_id']} · {run_label(x['cell'], x['model'], x['seed'], x.get('axes'))}"
        if i >= MOST_TAILS:
            parts.append(f"<li><code>{esc(who)}</code>: {esc(x['error'])}</li>")
            continue
        path, tail = log_tail(study, x["run_id"])
        body = (
            f'<pre class="log">{esc(chr(10).join(tail))}</pre>'
            if tail
            else f'<p class="quiet">no log lines ({esc(_short(path))})</p>'
        )
        parts.append(
            f'<li class="failure" data-run="{esc(x["run_id"])}"><p><code>{esc(who)}</code>: '
            f'<strong>{esc(x["error"])}</strong></p><p class="quiet">log: {esc(_short(path))}'
            f" (last {TAIL_LINES} lines; all of it: <code>cifar-hpc logs {esc(x['run_id'])} --results-dir "
            f"{esc(Path(study.root).parent)}</code>)</p>{body}</li>"
        )
    return f'<ol class="failures">{"".join(parts)}</ol>'
