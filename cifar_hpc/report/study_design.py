"""The question a study asks and how it is laid out: for the report's first section.

The question is the grid's ``description`` (``study.json`` records it since the report exists); the
design is the table's rows (``aggregate``): each cell, the reference it is compared with, what it
changes against that reference (the settings of the two rows' configs as written,
``cifar_hpc.study.design.identity``) and, when the comparison is confounded (a trick clash
resolution, or runs of more than one code version), why: the row's ``design_note``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.report.table import Row, Summary
from cifar_hpc.study.design import identity
from cifar_hpc.study.manifest import read_manifest
from cifar_hpc.study.recorded import Study

NOT_SHOWN = {"seed", "run_id"}
"""What differs between any two runs and is not a change of design."""


@dataclass(frozen=True)
class DesignRow:
    panel: str
    """Model and setting (``resnet18 epochs=2``)."""
    cell: str
    reference: str | None
    changes: str
    """``tricks.swa: False → True``; ``—`` for a reference; ``unknown`` without both configs."""
    note: str | None
    """Why the comparison is confounded (``Row.design_note``), else None."""
    runs: str
    """``3/3``: completed of expected."""


def question(study: Study) -> str | None:
    """The grid's description as ``submit`` recorded it; None when it did not."""
    manifest = read_manifest(study.root) or {}
    text = manifest.get("description")
    return str(text) if text else None


def _config_of(study: Study, row: Row) -> dict[str, Any] | None:
    """The written config of a run of the row (its first completed one, else any with a config)."""
    for run_id in row.run_ids:
        run = study.runs.get(run_id)
        if run is not None and run.config:
            return run.config
    settings = {k: v for k, v in row.axes.items() if k != "model"}
    for run in study.runs.values():
        if run.cell == row.cell and run.model == row.model and run.config:
            if all(run.config.get(k) == v for k, v in settings.items()):
                return run.config
    return None


def _identity(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    try:
        cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k != "run_id"})
    except (UserError, TypeError, ValueError):  # an older cifar-hpc's config
        return None
    return {k: v for k, v in identity(cfg).items() if k not in NOT_SHOWN}


def changes_text(mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> str:
    """The settings in which a row's config differs from its reference's: ``key: theirs → mine``."""
    if mine is None or theirs is None:
        return "unknown (a config was not recorded or is an older cifar-hpc's)"
    keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if not keys:
        return "nothing (the same settings)"
    return "; ".join(f"{k}: {_shown(theirs, k)} → {_shown(mine, k)}" for k in keys)


def _shown(values: dict[str, Any], key: str) -> str:
    """A setting as a grid file writes it (``true``, ``[[0, 1], [15, 2]]``, ``0.2``); ``—`` when absent."""
    if key not in values:
        return "—"
    value = values[key]
    return value if isinstance(value, str) else json.dumps(value, default=str)


def design_rows(study: Study, summary: Summary) -> list[DesignRow]:
    """One per row of the table, in its order."""
    by_key = {(tuple(sorted(r.axes.items(), key=str)), r.cell): r for r in summary.rows}
    identities: dict[int, dict[str, Any] | None] = {}

    def ident(row: Row) -> dict[str, Any] | None:
        if id(row) not in identities:
            identities[id(row)] = _identity(_config_of(study, row))
        return identities[id(row)]

    out = []
    for row in summary.rows:
        reference = by_key.get((tuple(sorted(row.axes.items(), key=str)), row.compare_to))
        if row.compare_to is None:
            changes = "— (the reference)"
        elif reference is None:
            changes = f"unknown (no row {row.compare_to} with these axes)"
        else:
            changes = changes_text(ident(row), ident(reference))
        out.append(
            DesignRow(
                panel=f"{row.model} {row.setting}".strip(),
                cell=row.cell,
                reference=row.compare_to,
                changes=changes,
                note=row.design_note,
                runs=f"{row.n}/{row.expected}",
            )
        )
    return out


def trick_lines(study: Study, rows: list[Row]) -> list[str]:
    """What each row's tricks changed besides switching themselves on (``tricks.resolutions`` of its
    config as written: where SWA starts and at which LR, what a clash switched off), one line per
    text with the cells it applies to: ``+swa: swa: SWA from epoch 7 of 10 at 0.2 x the peak LR
    (0.0008); ...``. A config of an older cifar-hpc reads as it trained (an absolute ``swa_lrs``)."""
    from cifar_hpc.training.tricks import resolutions

    cells: dict[str, list[str]] = {}
    for row in rows:
        config = _config_of(study, row)
        try:
            cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k != "run_id"}) if config else None
        except (UserError, TypeError, ValueError):  # unreadable: nothing said rather than a guess
            cfg = None
        label = f"{row.cell} ({row.setting})" if row.setting else row.cell
        for text in resolutions(cfg) if cfg is not None else []:
            named = cells.setdefault(text, [])
            if label not in named:
                named.append(label)
    return [f"{', '.join(named)}: {text}" for text, named in cells.items()]


def layout_line(study: Study, summary: Summary) -> str:
    """``34 rows (17 cells x 2 models), 102 runs, seeds 0-2; baseline cell: baseline``."""
    cells = {r.cell for r in summary.rows}
    models = {r.model for r in summary.rows}
    seeds = sorted({r.seed for r in study.runs.values() if r.seed is not None})
    seed_text = (
        f"seeds {seeds[0]}-{seeds[-1]}"
        if seeds and seeds == list(range(seeds[0], seeds[-1] + 1))
        else ("seeds " + ", ".join(map(str, seeds)) if seeds else "no seeds known")
    )
    return (
        f"{len(summary.rows)} rows ({len(cells)} cells x {len(models)} model{'s' * (len(models) != 1)}"
        f"{', and other axes' if any(r.setting for r in summary.rows) else ''}), {sum(summary.counts.values())} runs, "
        f"{seed_text}; baseline cell: {study.baseline_cell}"
    )
