"""Which row of the comparison table each run belongs to: a row is everything but the seed.

A row is a cell at one value of every axis (``axes``: the non-seed axis values, model included:
``study.json`` records them; for older studies and plain run folders they are the model and each
of ``AXIS_FIELDS`` whose value varies between the runs) and one configuration
(``config.setting_of``). Runs of one cell and axes with other configurations are other *versions*
of the cell (an edited grid resubmitted, a ``submit --set`` quick check into the study's folder):
``cifar_hpc.report.versions`` says which one a row shows (``--where``, ``--all-versions``, else the
grid's own) and when a row may be compared with its reference; the others are left out, listed and
named in a warning. Pure: statuses in, groups out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.train_config import MODELS
from cifar_hpc.report import versions
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
    """The row's label: its cell's name, with ``--all-versions`` also what tells this version of the
    cell apart (``sgd [epochs=3]``)."""
    statuses: list[RunStatus]
    compare_to: str | None = None
    """The reference row's label (``assign_references``)."""
    name: str = ""
    """Its cell's name (``cell`` without a version's label)."""
    identity: dict[str, Any] | None = None
    """Its runs' settings (``versions.identity``); None: no run has a config yet."""
    changes: tuple[str, ...] | None = None
    """What its comparison changes, as ``study.json`` recorded it; None: not recorded."""
    siblings: list[dict[str, Any]] = field(default_factory=list)
    """The settings of every version of its cell at these axes, shown or not (``versions.allowed_changes``)."""
    mismatch: str | None = None
    """Why it is not compared with its reference (``versions.mismatch``); None: it is, or it is one."""

    def __post_init__(self) -> None:
        self.name = self.name or self.cell


@dataclass(frozen=True)
class LeftOut:
    """A run outside the table: another version of its cell, or not chosen by ``--where``."""

    status: RunStatus
    version: str
    """What tells its version apart (``epochs=3``), or ``left out by --where``."""


def _run_axes(run: RecordedRun, varying: Sequence[str]) -> dict[str, Any]:
    if run.axes:
        return {"model": run.model, **run.axes}
    config = run.config or {}
    return {"model": run.model, **{k: config[k] for k in varying if k in config}}


def group_runs(
    statuses: Sequence[RunStatus],
    warnings: list[str],
    *,
    where: Mapping[str, Any] | None = None,
    all_versions: bool = False,
) -> tuple[list[Group], list[LeftOut]]:
    """The rows' runs, and the runs left out of the table (``versions``: which version of a cell is shown)."""
    configs = [s.run.config for s in statuses if s.run.config and not s.run.axes]
    varying = [k for k in AXIS_FIELDS if len({str(c[k]) for c in configs if k in c}) > 1]
    by_setting = {s.run.setting: s.run.config for s in statuses if s.run.setting and s.run.config}

    def config_of(s: RunStatus) -> dict[str, Any] | None:  # a run not started yet: its seeds' settings
        return s.run.config or by_setting.get(s.run.setting)

    labels: dict[tuple[AxesKey, str], list[RunStatus]] = {}
    for s in statuses:
        if s.run.model and s.run.cell:
            labels.setdefault((axes_key(_run_axes(s.run, varying)), s.run.cell), []).append(s)
    siblings = {key: [v.identity for v in _versions(m, config_of) if v.identity] for key, m in labels.items()}
    chosen, left = _chosen_by(where, labels, config_of, warnings) if where else (labels, [])
    groups: list[Group] = []
    hidden: dict[tuple, tuple[dict[str, int], list[RunStatus], versions.Version, versions.Version, str]] = {}
    for (axes, cell), members in chosen.items():
        found = _versions(members, config_of)
        unknown = [s for s in members if s.run.setting is None]  # no config, no study.json setting: any version's

        if len(found) == 1 or all_versions:
            keys = versions.telling_apart(found)
            for i, v in enumerate(found):
                label = versions.label(cell, v, keys) if len(found) > 1 else cell
                groups.append(_group(axes, cell, v, label, [*v.statuses, *(unknown if i == 0 else ())], siblings))
            continue
        shown, why = versions.shown_version(found)
        groups.append(_group(axes, cell, shown, cell, [*shown.statuses, *unknown], siblings))
        for v in found:
            if v is not shown:
                cells, runs, *_ = hidden.setdefault((*versions.difference(v, shown), why), ({}, [], v, shown, why))
                cells[cell] = cells.get(cell, 0) + len(v.statuses)
                runs += v.statuses
    for cells, runs, v, shown, why in hidden.values():
        text, found_text = versions.left_out_warning(cells, versions.Version(None, runs, v.identity), shown, why)
        warnings.append(text)
        left += [LeftOut(s, found_text) for s in runs]
    return groups, left


def _group(axes: AxesKey, cell: str, v: versions.Version, label: str, runs: list[RunStatus], siblings: dict) -> Group:
    return Group(axes, label, runs, name=cell, identity=v.identity, changes=v.changes, siblings=siblings[axes, cell])


def _versions(members: Sequence[RunStatus], config_of: Any) -> list[versions.Version]:
    """A row's runs by their settings (runs of no known setting aside), in a stable order."""
    by_setting: dict[str | None, list[RunStatus]] = {}
    for s in members:
        if s.run.setting is not None or all(m.run.setting is None for m in members):
            by_setting.setdefault(s.run.setting, []).append(s)
    found = []
    for setting, runs in sorted(by_setting.items(), key=lambda item: str(item[0])):
        config = next((c for c in map(config_of, runs) if c), None)
        found.append(versions.Version(setting, runs, versions.identity(config) if config else None))
    return found


def _chosen_by(
    where: Mapping[str, Any], labels: dict[tuple[AxesKey, str], list[RunStatus]], config_of: Any, warnings: list[str]
) -> tuple[dict[tuple[AxesKey, str], list[RunStatus]], list[LeftOut]]:
    """``--where``: the runs whose settings match every key (``UserError`` when none does)."""
    chosen: dict[tuple[AxesKey, str], list[RunStatus]] = {}
    left: list[LeftOut] = []
    known = []
    for key, members in labels.items():
        for s in members:
            config = config_of(s)
            values = {**versions.values_of(config), "seed": s.run.seed} if config else None
            known += [values] if values else []
            if values is not None and all(values.get(k, None) == v for k, v in where.items()):
                chosen.setdefault(key, []).append(s)
            else:
                left.append(LeftOut(s, "left out by --where"))
    if not chosen:
        raise UserError(versions.no_match(where, known))
    if left:
        unknown = len(left) - sum(1 for x in left if config_of(x.status))
        warnings.append(
            f"{versions.where_text(where)} leaves out {len(left)} run{'' if len(left) == 1 else 's'} of other settings"
            + (f" ({unknown} of them not started: their settings are not known)" if unknown else "")
        )
    return chosen, left


def assign_references(groups: Sequence[Group], study: Study, baseline: str | None) -> None:
    """Each row's reference row (``compare_to``), and why it is not compared with it (``mismatch``).
    With ``--all-versions`` the reference cell may have several rows: the one that differs from this
    row in just what the comparison changes, else the first."""
    rows: dict[tuple[AxesKey, str], list[Group]] = {}
    for g in groups:
        rows.setdefault((g.axes, g.name), []).append(g)
    for g in groups:
        name = row_reference(g, study, baseline)
        candidates = rows.get((g.axes, name), []) if name is not None else []
        reasons = [comparison_mismatch(g, c) for c in candidates]
        pick = next((i for i, reason in enumerate(reasons) if reason is None), 0)
        g.compare_to = candidates[pick].cell if candidates else name
        g.mismatch = reasons[pick] if candidates else None


def comparison_mismatch(group: Group, reference: Group) -> str | None:
    """Why ``group`` cannot be compared with ``reference`` (``versions.mismatch``); the changes
    ``study.json`` recorded count only against the reference they were recorded for."""
    own = any(s.run.compare_to_known and s.run.compare_to == reference.name for s in group.statuses)
    allowed = versions.allowed_changes(group.siblings, reference.siblings, group.changes if own else None)
    return versions.mismatch(group.identity, reference.identity, allowed)


def row_reference(group: Group, study: Study, baseline: str | None) -> str | None:
    """The cell a row compares with: ``--baseline`` for all, else study.json's, else the study's baseline."""
    if baseline is not None:
        return None if group.name == baseline else baseline
    recorded = [s.run for s in group.statuses if s.run.compare_to_known]
    if recorded:
        return max(recorded, key=lambda run: run.expansion).compare_to
    return None if group.name == study.baseline_cell else study.baseline_cell


def design_note(group: Group, reference: Group | None) -> str | None:
    """What else than it says a row's comparison changes (``design.comparison_note``), from the two
    rows' configs as written; None when they agree, or when a config is unknown or unreadable."""
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
    return comparison_note(PlannedRun(group.name, mine), PlannedRun(reference.name, theirs))
