"""Which row of the comparison table each run belongs to: a row is everything but the seed.

A row is a cell at one value of every axis (``axes``: the non-seed axis values, model included:
``study.json`` records them; for older studies and plain run folders they are the model and each
of ``AXIS_FIELDS`` whose value varies between the runs) and one configuration
(``config.setting_of``). When a grid was edited and resubmitted into the same folder, ``study.json``
knows which configuration of a cell is the newest (``RecordedRun.expansion``); runs of the older ones are
superseded: listed, never in the table. Pure: statuses in, groups out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cifar_hpc.config.train_config import MODELS
from cifar_hpc.study.grid import _AXIS_KEYS  # the one list of what a grid may cross
from cifar_hpc.study.recorded import RecordedRun, Study
from cifar_hpc.study.states import RunStatus

AXIS_FIELDS = tuple(sorted(_AXIS_KEYS - {"model", "seed"}))
"""Top-level settings a grid may cross with its cells besides model and seed."""


def model_order(model: str) -> tuple[int, str]:
    return (MODELS.index(model) if model in MODELS else len(MODELS), model)


AxesKey = tuple  # the axes as a hashable, ordered tuple of (name, value)


def axes_key(axes: dict[str, Any]) -> AxesKey:
    return tuple((k, axes[k]) for k in ("model", *sorted(k for k in axes if k != "model")) if k in axes)


def axes_order(key: AxesKey) -> tuple:
    axes = dict(key)
    return (model_order(str(axes.get("model", ""))), [(k, str(v)) for k, v in key if k != "model"])


@dataclass
class Group:
    """The runs of one row, and where the row stands against the rest."""

    axes: AxesKey
    cell: str
    statuses: list[RunStatus]
    compare_to: str | None = None


def _run_axes(run: RecordedRun, varying: Sequence[str]) -> dict[str, Any]:
    if run.axes:
        return {"model": run.model, **run.axes}
    config = run.config or {}
    return {"model": run.model, **{k: config[k] for k in varying if k in config}}


def group_runs(statuses: Sequence[RunStatus], warnings: list[str]) -> tuple[list[Group], list[RunStatus]]:
    """The rows' runs, and the runs of superseded versions of a cell (left out of the table)."""
    configs = [s.run.config for s in statuses if s.run.config and not s.run.axes]
    varying = [k for k in AXIS_FIELDS if len({str(c[k]) for c in configs if k in c}) > 1]
    labels: dict[tuple[AxesKey, str], list[RunStatus]] = {}
    for s in statuses:
        if s.run.model and s.run.cell:
            labels.setdefault((axes_key(_run_axes(s.run, varying)), s.run.cell), []).append(s)
    groups: list[Group] = []
    superseded: list[RunStatus] = []
    for (axes, cell), members in labels.items():
        settings = {s.run.setting for s in members} - {None}
        if len(settings) <= 1:
            groups.append(Group(axes, cell, members))
            continue
        known = [s for s in members if s.run.setting and s.run.expansion]
        if known:  # study.json says which version of the cell is the newest
            current = max(known, key=lambda s: s.run.expansion).run.setting
            groups.append(Group(axes, cell, [s for s in members if s.run.setting in (current, None)]))
            superseded += [s for s in members if s.run.setting not in (current, None)]
            continue
        where = ", ".join(f"{k}={v}" for k, v in axes)
        warnings.append(
            f"cell {cell} ({where}) has runs of {len(settings)} different configurations: shown as "
            f"separate rows {cell}#<setting>; no study.json says which is current"
        )
        for setting in sorted(settings):
            groups.append(Group(axes, f"{cell}#{setting[:6]}", [s for s in members if s.run.setting == setting]))
    if superseded:
        cells = sorted({s.run.cell for s in superseded})
        warnings.append(
            f"{len(superseded)} runs of earlier versions of {', '.join(cells)} (the grid was edited since) "
            "are not in the table"
        )
    return groups, superseded


def row_reference(group: Group, study: Study, baseline: str | None) -> str | None:
    """The cell a row compares with: ``--baseline`` for all, else study.json's, else the study's baseline."""
    if baseline is not None:
        return None if group.cell == baseline else baseline
    recorded = [s.run for s in group.statuses if s.run.compare_to_known]
    if recorded:
        return max(recorded, key=lambda run: run.expansion).compare_to
    return None if group.cell == study.baseline_cell else study.baseline_cell


def design_note(group: Group, reference: Group | None) -> str | None:
    """What else than it says a row's comparison changes (``design.comparison_note``), from the two
    rows' configs as written; None when they agree, or when a config is unknown or unreadable."""
    from cifar_hpc.base.errors import UserError
    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.study.design import comparison_note
    from cifar_hpc.study.plan import PlannedRun

    def config(g: Group | None) -> TrainConfig | None:
        written = next((s.run.config for s in g.statuses if s.run.config), None) if g else None
        if written is None:
            return None
        try:
            return TrainConfig.from_dict({k: v for k, v in written.items() if k != "run_id"})
        except (UserError, TypeError, ValueError):  # an older cifar-hpc's config: no label rather than a wrong one
            return None

    mine, theirs = config(group), config(reference)
    if mine is None or theirs is None:
        return None
    return comparison_note(PlannedRun(group.cell, mine), PlannedRun(reference.cell, theirs))
