"""Grids: a study as data (``jobs/<name>.toml``), expanded into runs by pure functions.

A grid file has a ``[base]`` table (TrainConfig settings shared by every run), ``[axes]`` (lists
crossed with every cell: ``model``, ``seed``, or any top-level TrainConfig field), and cells: an
``[ablation]`` table that generates the standard ablation cells from trick names, and/or explicit
``[[cells]]`` with a ``name`` and a ``set`` table of overrides::

    name = "ablation"                      # optional; defaults to the file name
    baseline_cell = "baseline"
    [base]
    epochs = 30
    [axes]
    model = ["resnet18", "resnet34"]
    seed = [0, 1, 2]
    [ablation]
    tricks = ["crop", "flip", "swa"]       # baseline, +each, full, full-each
    [ablation.on]                          # optional: what "on" means for a trick
    accumulate = { tricks = { accumulate = "0:1,15:2" } }
    [[cells]]
    name = "adam"
    set = { optim = { name = "adam", lr = 1e-3 } }

Every run gets ``grid``, ``cell`` and the W&B group from the grid, and its ``run_id`` from its
config; two cells that describe the same run are refused.
"""

from __future__ import annotations

import itertools
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_hpc.config import TrainConfig
from cifar_hpc.errors import UserError
from cifar_hpc.settings import coerce, find_file, flatten, merge, read_toml
from cifar_hpc.tricks import TRICK_OFF, TRICK_ON, TRICKS

_NAME = re.compile(r"^[A-Za-z0-9+][A-Za-z0-9_.+-]{0,63}$")
"""Grid and cell names end up in folder names, W&B groups and Slurm job names: no shell, no spaces."""

_TOP_KEYS = {"name", "description", "baseline_cell", "base", "axes", "ablation", "cells"}
_AXIS_KEYS = {"model", "seed", "epochs", "batch_size", "precision"}
"""Top-level settings a grid may cross with its cells (sections go in cells)."""


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict[str, Any]
    """Settings this cell changes relative to the grid's base (nested like TrainConfig)."""


@dataclass(frozen=True)
class Run:
    cell: str
    config: TrainConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    baseline_cell: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    cells: tuple[Cell, ...]


def grid_dirs() -> list[Path]:
    """Where grid names are looked up: ./jobs first, then the jobs/ folder shipped beside the package."""
    return [Path("jobs"), Path(__file__).resolve().parent.parent / "jobs"]


def find_grid(name_or_path: str) -> Path:
    return find_file(name_or_path, grid_dirs(), "grid")


def load_grid(name_or_path: str) -> Grid:
    path = find_grid(name_or_path)
    return parse_grid(read_toml(path, "grid file"), default_name=path.stem, source=str(path))


def parse_grid(raw: dict[str, Any], *, default_name: str, source: str = "grid") -> Grid:
    """Validate a grid's structure (values are validated when the runs are built)."""
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(_TOP_KEYS))}")
    name = str(raw.get("name", default_name))
    _check_name(f"{source}: grid name", name)
    base = _table(raw.get("base", {}), f"{source}: [base]")
    axes = _table(raw.get("axes", {}), f"{source}: [axes]")
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise UserError(f"{source}: axis {key!r} must be a non-empty list, got {values!r}")
        if key not in _AXIS_KEYS:
            raise UserError(f"{source}: unknown axis {key!r}; valid: {', '.join(sorted(_AXIS_KEYS))}")
    cells = [*_ablation_cells(raw.get("ablation"), source), *_explicit_cells(raw.get("cells", []), source)]
    if not cells:
        cells = [Cell("baseline", {})]
    seen: set[str] = set()
    for cell in cells:
        if cell.name in seen:
            raise UserError(f"{source}: cell {cell.name!r} is defined twice")
        seen.add(cell.name)
    baseline = str(raw.get("baseline_cell", "baseline"))
    if baseline not in seen:
        raise UserError(f"{source}: baseline_cell {baseline!r} is not one of the cells: {', '.join(sorted(seen))}")
    return Grid(name, str(raw.get("description", "")), baseline, base, axes, tuple(cells))


def ablation_cells(tricks: list[str], on: dict[str, dict[str, Any]] | None = None) -> list[Cell]:
    """The standard ablation: a plain baseline, each trick added alone, the full recipe, and the
    full recipe minus each trick."""
    on = {**TRICK_ON, **(on or {})}
    all_off: dict[str, Any] = {}
    for trick in TRICKS:
        all_off = merge(all_off, TRICK_OFF[trick])
    full = all_off
    for trick in tricks:
        full = merge(full, on[trick])
    cells = [Cell("baseline", all_off)]
    cells += [Cell(f"+{trick}", merge(all_off, on[trick])) for trick in tricks]
    cells.append(Cell("full", full))
    cells += [Cell(f"full-{trick}", merge(full, TRICK_OFF[trick])) for trick in tricks]
    return cells


def expand(grid: Grid, *, results_dir: Path | str = "runs", overrides: dict[str, Any] | None = None) -> list[Run]:
    """Every run of the grid: cells × the product of the axes, in a stable order.

    ``overrides`` (nested like TrainConfig) are applied last, e.g. the devices a profile gives.
    Each cell's settings are read and validated once; its other runs differ only in top-level axis
    values, checked once per value, so a 1,000-run grid does not parse 1,000 nested configs.
    """
    results = Path(results_dir)
    axis_names = list(grid.axes)
    hints = typing.get_type_hints(TrainConfig)
    try:
        axis_values = [[coerce(name, hints[name], v) for v in values] for name, values in grid.axes.items()]
        pinned = {k: coerce(k, hints[k], v) for k, v in (overrides or {}).items() if k in grid.axes}  # overrides win
    except UserError as error:
        raise UserError(f"grid {grid.name}: {error}") from None
    runs: list[Run] = []
    by_id: dict[str, str] = {}
    for cell in grid.cells:
        settings = {**merge(grid.base, cell.overrides), "grid": grid.name, "cell": cell.name}
        settings["wandb"] = {**settings.get("wandb", {}), "group": grid.name}
        template: TrainConfig | None = None
        for values in itertools.product(*axis_values):
            axes = {**dict(zip(axis_names, values)), **pinned}
            try:
                if template is None:
                    template = _identify_data(TrainConfig.from_dict(merge({**settings, **axes}, overrides or {})))
                cfg = template.replace(**axes)  # axes are top-level scalars (_AXIS_KEYS)
            except UserError as error:
                raise UserError(f"grid {grid.name}, cell {cell.name}: {error}") from None
            cfg = cfg.replace(out_dir=str(results / grid.name / cfg.run_id))
            if cfg.run_id in by_id:
                raise UserError(
                    f"grid {grid.name}: cells {by_id[cfg.run_id]!r} and {cell.name!r} describe the same run ({cfg.run_id})"
                )
            by_id[cfg.run_id] = cell.name
            runs.append(Run(cell.name, cfg))
    return runs


def _identify_data(cfg: TrainConfig) -> TrainConfig:
    """The data's fingerprint is part of each run id; without data yet (``grid show`` before a
    download) the ids leave it out, and ``submit`` refuses the missing data anyway."""
    from cifar_hpc.fingerprint import with_fingerprint

    try:
        return with_fingerprint(cfg)
    except UserError:
        return cfg


def differences(run: Run, baseline: Run) -> str:
    """What a run's settings change relative to the baseline run, as dotted ``key=value`` pairs."""
    labels = {"cell", "out_dir", "grid"}
    mine, theirs = dict(flatten(run.config.to_dict())), dict(flatten(baseline.config.to_dict()))
    changed = [f"{key}={_show(value)}" for key, value in mine.items() if key not in labels and theirs.get(key) != value]
    return ", ".join(changed) or "-"


def render_runs(grid: Grid, runs: list[Run]) -> str:
    """The text of ``cifar-hpc grid show``: a header and one line per run (pure, golden-tested)."""
    axes = [name for name in grid.axes if name not in ("model", "seed")]
    baselines = {_axis_key(run, axes): run for run in runs if run.cell == grid.baseline_cell}
    lines = [
        f"grid {grid.name}: {len(runs)} runs = {len(grid.cells)} cells x "
        + " x ".join(f"{len(values)} {name}" for name, values in grid.axes.items()),
        f"baseline cell: {grid.baseline_cell}" + (f"  ({grid.description})" if grid.description else ""),
        f"{'run_id':<12}  {'cell':<16}  {'model':<9}  {'seed':>4}  differs from baseline",
    ]
    for run in runs:
        base = baselines.get(_axis_key(run, axes))
        what = differences(run, base) if base is not None and run.cell != grid.baseline_cell else "-"
        lines.append(f"{run.run_id:<12}  {run.cell:<16}  {run.config.model:<9}  {run.config.seed:>4}  {what}")
    return "\n".join(lines) + "\n"


def _axis_key(run: Run, axes: list[str]) -> tuple:
    return (run.config.model, run.config.seed, *(getattr(run.config, name) for name in axes))


def _show(value: Any) -> str:
    if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value):
        return ",".join(f"{a}:{b}" for a, b in value) or "off"
    return str(value)


def _ablation_cells(raw: Any, source: str) -> list[Cell]:
    if raw is None:
        return []
    table = _table(raw, f"{source}: [ablation]")
    unknown = sorted(set(table) - {"tricks", "on"})
    if unknown:
        raise UserError(f"{source}: [ablation] has unknown key {unknown[0]!r}; valid: on, tricks")
    tricks = table.get("tricks", [])
    if not isinstance(tricks, list) or not tricks:
        raise UserError(f"{source}: [ablation] tricks must be a non-empty list of trick names")
    for trick in tricks:
        if trick not in TRICKS:
            raise UserError(f"{source}: unknown trick {trick!r}; valid: {', '.join(TRICKS)}")
    on = _table(table.get("on", {}), f"{source}: [ablation.on]")
    for trick in on:
        if trick not in TRICKS:
            raise UserError(f"{source}: [ablation.on] names unknown trick {trick!r}; valid: {', '.join(TRICKS)}")
    return ablation_cells(tricks, on)


def _explicit_cells(raw: Any, source: str) -> list[Cell]:
    if not isinstance(raw, list):
        raise UserError(f"{source}: cells must be an array of tables ([[cells]])")
    cells = []
    for index, item in enumerate(raw):
        table = _table(item, f"{source}: cells[{index}]")
        unknown = sorted(set(table) - {"name", "set"})
        if unknown or "name" not in table:
            raise UserError(f"{source}: cells[{index}] needs exactly 'name' and optionally 'set', got {sorted(table)}")
        _check_name(f"{source}: cell name", str(table["name"]))
        cells.append(Cell(str(table["name"]), _table(table.get("set", {}), f"{source}: cells[{index}].set")))
    return cells


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise UserError(
            f"{what} {name!r} may only use letters, digits and . _ + - (at most 64, no spaces or shell characters)"
        )


def _table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a table, got {value!r}")
    return value
