"""Grids: a study as data (``jobs/<name>.toml``), expanded into runs by pure functions.

A grid file has a ``[base]`` table (TrainConfig settings shared by every run), ``[axes]`` (lists
crossed with every cell: ``model``, ``seed``, or any top-level TrainConfig field), and cells: an
``[ablation]`` table that generates the standard ablation cells from trick names (``study.ablation``), and/or explicit
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
    compare_to = "baseline"                # optional: the cell it is compared with
    set = { optim = { name = "adam", lr = 1e-3 } }

Every run gets ``grid``, ``cell`` and the W&B group from the grid, and its ``run_id`` from its
config. Each cell is compared with its reference (``design.reference_of``: its ``compare_to``,
else the grid's baseline cell, which is the reference of the others). Two cells that describe the
same run, or that train the same thing once the trick clashes are resolved (``tricks.effective``),
are refused; ``cifar_hpc.study.design`` says which comparisons change more than they say.
"""

from __future__ import annotations

import itertools
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cifar_hpc
from cifar_hpc.base.errors import UserError
from cifar_hpc.base.words import counted
from cifar_hpc.config.keys import checked_settings
from cifar_hpc.config.settings import coerce, find_file, flatten, merge, read_toml
from cifar_hpc.config.train_config import TrainConfig
from cifar_hpc.study.ablation import read_ablation, stand_in_note
from cifar_hpc.study.design import check_references, comparison_note, reference_of, same_training
from cifar_hpc.study.plan import Cell, Grid, PlannedRun
from cifar_hpc.training.tricks import effective

_NAME = re.compile(r"^[A-Za-z0-9+][A-Za-z0-9_.+-]{0,63}$")
"""Grid and cell names end up in folder names, W&B groups and Slurm job names: no shell, no spaces."""

_TOP_KEYS = {"name", "description", "baseline_cell", "base", "axes", "ablation", "cells"}
_AXIS_KEYS = {"model", "seed", "epochs", "batch_size", "precision"}
"""Top-level settings a grid may cross with its cells (sections go in cells)."""


def grid_dirs() -> list[Path]:
    """Where grid names are looked up: ./jobs first, then the jobs/ folder shipped beside the package."""
    return [Path("jobs"), Path(cifar_hpc.__file__).resolve().parent.parent / "jobs"]


def find_grid(name_or_path: str) -> Path:
    return find_file(name_or_path, grid_dirs(), "grid")


def load_grid(name_or_path: str) -> Grid:
    path = find_grid(name_or_path)
    return parse_grid(read_toml(path, "grid file"), default_name=path.stem, source=str(path))


def parse_grid(raw: dict[str, Any], *, default_name: str, source: str = "grid") -> Grid:
    """Validate a grid's structure, and its settings as ``--set``'s are (``config.keys.check_setting``)."""
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(_TOP_KEYS))}")
    name = str(raw.get("name", default_name))
    _check_name(f"{source}: grid name", name)
    base = checked_settings(raw.get("base", {}), f"{source}: [base]")  # blamed where written, not on a cell
    axes = _table(raw.get("axes", {}), f"{source}: [axes]")
    for key, values in axes.items():
        _check_axis(source, key, values)
    generated, stand_ins = read_ablation(raw.get("ablation"), source)
    # a cell compared with a generated cell that another stands for is compared with that one
    explicit = [
        replace(cell, compare_to=stand_ins.get(cell.compare_to, cell.compare_to))
        for cell in _explicit_cells(raw.get("cells", []), source)
    ]
    cells = [*generated, *explicit]
    if not cells:
        cells = [Cell("baseline", {})]
    seen: set[str] = set()
    for cell in cells:
        if cell.name in seen:
            raise UserError(f"{source}: cell {cell.name!r} is defined twice")
        seen.add(cell.name)
    baseline = str(raw.get("baseline_cell", "baseline"))
    baseline = stand_ins.get(baseline, baseline)
    if baseline not in seen:
        raise UserError(f"{source}: baseline_cell {baseline!r} is not one of the cells: {', '.join(sorted(seen))}")
    notes = (stand_in_note(source, stand_ins),) if stand_ins else ()
    grid = Grid(name, str(raw.get("description", "")), baseline, base, axes, tuple(cells), notes=notes)
    check_references(grid, source)
    return grid


def parse_seeds(spec: str) -> list[int]:
    """``--seeds``: ``0-9``, ``0,3,7`` or ``0-2,5`` as a list of seeds, in the order given."""
    what = f"--seeds {spec!r}"
    if not spec.strip():
        raise UserError("--seeds needs seeds, e.g. 0-9, 0,3,7 or 0-2,5")
    seeds: list[int] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            raise UserError(f"{what}: empty item; use e.g. 0-9, 0,3,7 or 0-2,5")
        found = _SEED_ITEM.match(item)
        if found is None:
            raise UserError(f"{what}: {item!r} is not a seed or a range (e.g. 0-9, 0,3,7 or 0-2,5)")
        first, last = int(found[1]), int(found[2] or found[1])
        if last < first:
            raise UserError(f"{what}: range {item} goes down; write {last}-{first}")
        for seed in range(first, last + 1):
            if seed in seeds:
                raise UserError(f"{what}: seed {seed} is given twice")
            seeds.append(seed)
    return seeds


_SEED_ITEM = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")


def override_axes(grid: Grid, axes: dict[str, list[Any]]) -> Grid:
    """The grid with some axes replaced (or added), e.g. ``{"seed": [0, ..., 9]}`` for ``--seeds``.
    Runs whose settings are unchanged keep their run ids, so a resubmission adds only the new ones."""
    for key, values in axes.items():
        _check_axis(f"grid {grid.name}", key, values)
    return replace(grid, axes={**grid.axes, **axes})


def run_axes(grid: Grid, run: PlannedRun) -> dict[str, Any]:
    """A run's axis values but the seed, the model always included: what makes it a row of the table."""
    names = ["model", *(name for name in grid.axes if name not in ("model", "seed"))]
    return {name: getattr(run.config, name) for name in names}


def expand(
    grid: Grid,
    *,
    results_dir: Path | str = "runs",
    overrides: dict[str, Any] | None = None,
    axes_override: dict[str, list[Any]] | None = None,
) -> list[PlannedRun]:
    """Every run of the grid: cells × the product of the axes, in a stable order.

    ``overrides`` (nested like TrainConfig) are applied last, e.g. the devices a profile gives;
    ``axes_override`` replaces axes first (``override_axes``), e.g. the seeds of ``--seeds``.
    The grid's ``forced`` settings (``--set``) win over its cells' own; only the ``chosen`` cells'
    runs are returned, each with the id it has in the whole grid.
    Each cell's settings are read and validated once; its other runs differ only in top-level axis
    values, checked once per value, so a 1,000-run grid does not parse 1,000 nested configs.
    """
    if axes_override:
        grid = override_axes(grid, axes_override)
    results = Path(results_dir)
    axis_names = list(grid.axes)
    hints = typing.get_type_hints(TrainConfig)
    try:
        axis_values = [[coerce(name, hints[name], v) for v in values] for name, values in grid.axes.items()]
        pinned = {k: coerce(k, hints[k], v) for k, v in (overrides or {}).items() if k in grid.axes}  # overrides win
    except UserError as error:
        raise UserError(f"grid {grid.name}: {error}") from None
    labelled = tuple(name for name in axis_names if name not in ("model", "seed"))  # in each run's name
    runs: list[PlannedRun] = []
    by_id: dict[str, str] = {}
    trained: dict[str, PlannedRun] = {}  # effective run id -> the first run that trains it
    for cell in grid.cells:
        settings = {**merge(merge(grid.base, cell.overrides), grid.forced), "grid": grid.name, "cell": cell.name}
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
                    + _forced_hint(grid, by_id[cfg.run_id], cell.name)
                )
            by_id[cfg.run_id] = cell.name
            same = trained.setdefault(effective(cfg).run_id, PlannedRun(cell.name, cfg))
            if same.cell != cell.name:
                raise UserError(
                    f"grid {grid.name}: cells {same.cell!r} and {cell.name!r} train the same thing: "
                    f"{same_training(same.config, cfg)}; drop one" + _forced_hint(grid, same.cell, cell.name)
                )
            runs.append(PlannedRun(cell.name, cfg, labelled))
    if grid.chosen is not None:
        runs = [run for run in runs if run.cell in grid.chosen]
    return runs


def _forced_hint(grid: Grid, *cells: str) -> str:
    """Why two cells came out the same, when ``--set`` overwrote what told them apart."""
    by_name = {cell.name: cell for cell in grid.cells}
    written = {key for name in cells for key, _ in flatten(by_name[name].overrides)}
    masked = sorted(key for key, _ in flatten(grid.forced) if key in written)
    if not masked:
        return ""
    # checked on the whole grid even under --cells: one run recorded under two cells corrupts the study
    return f"; --set {', '.join(masked)} overrides what tells them apart: leave it out"


def _identify_data(cfg: TrainConfig) -> TrainConfig:
    """The data's fingerprint is part of each run id; without data yet (``grid show`` before a
    download) the ids leave it out, and ``submit`` refuses the missing data anyway."""
    from cifar_hpc.data.fingerprint import with_fingerprint

    try:
        return with_fingerprint(cfg)
    except UserError:
        return cfg


def unidentified_data(runs: Sequence[PlannedRun]) -> list[str]:
    """What ``grid show`` says when the runs' data is not there: their ids then leave out its
    fingerprint, so they are not the ids of the study submitted with that data (which ``--results-dir``
    may hold, all of it shown as not run)."""
    missing = sorted({run.config.data.dir for run in runs if run.config.data.fingerprint is None})
    return [
        f"no data found at {data_dir} ({Path(data_dir).resolve()}: a relative data.dir is relative to the folder "
        "cifar-hpc runs in): the run ids below leave out the data's fingerprint and differ from those of a "
        "submission with that data"
        for data_dir in missing
    ]


def differences(run: PlannedRun, reference: PlannedRun) -> str:
    """What a run's settings change relative to its reference run, as dotted ``key=value`` pairs."""
    labels = {"cell", "out_dir", "grid"}
    mine, theirs = dict(flatten(run.config.to_dict())), dict(flatten(reference.config.to_dict()))
    changed = [f"{key}={_show(value)}" for key, value in mine.items() if key not in labels and theirs.get(key) != value]
    return ", ".join(changed) or "-"


def render_runs(grid: Grid, runs: list[PlannedRun], states: Mapping[str, str] | None = None) -> str:
    """The text of ``cifar-hpc grid show``: a header and one line per run with its reference cell
    (``vs``), what it changes against that cell's run of the same axes, and the design note when
    the comparison changes more or less than that (pure, golden-tested). ``states``: a column, each
    run's state in words (``run_state.plan_word``; a run not in it: not run); None: no study yet.

    ``runs``: may hold every cell's runs (``expand`` of the grid without its ``chosen`` cells), so
    that a chosen cell is still compared with a reference cell that is not shown; only the chosen
    cells' runs get a line."""
    axes = [name for name in grid.axes if name not in ("model", "seed")]
    by_key = {(run.cell, _axis_key(run, axes)): run for run in runs}
    shown = [run for run in runs if grid.chosen is None or run.cell in grid.chosen]
    cells = (f"{len(grid.chosen)} of " if grid.chosen is not None else "") + counted(len(grid.cells), "cell")
    cell_w = max(len("cell"), *(len(cell.name) for cell in grid.cells))
    vs_w = max(len("vs"), *(len(reference_of(grid, cell.name) or "-") for cell in grid.cells))
    axis_w = {name: max(len(name), *(len(str(value)) for value in grid.axes[name])) for name in axes}
    extra = "".join(f"  {name:>{axis_w[name]}}" for name in axes) + ("  state    " if states is not None else "")
    lines = [
        f"grid {grid.name}: {counted(len(shown), 'run')} = "  # each axis named as a noun: 1 seed, 2 epochs
        + " x ".join([cells, *(counted(len(values), name.rstrip("s")) for name, values in grid.axes.items())]),
        f"baseline cell: {grid.baseline_cell}" + (f"  ({grid.description})" if grid.description else ""),
        *(
            [f"--set (every run): {', '.join(f'{k}={_show(v)}' for k, v in flatten(grid.forced))}"]
            if grid.forced
            else []
        ),
        f"{'run_id':<12}  {'cell':<{cell_w}}  {'model':<8}  {'seed':>4}{extra}  {'vs':<{vs_w}}  differs from its reference",
    ]
    said: dict[tuple, str] = {}  # a run and its reference share the seed: one text per cell and axes
    for run in shown:
        ref_cell = reference_of(grid, run.cell)
        ref = by_key.get((ref_cell, _axis_key(run, axes)))
        what = "-"
        if ref is not None:
            key = (run.cell, run.config.model, *(getattr(run.config, name) for name in axes))
            if key not in said:
                note = comparison_note(run, ref)
                said[key] = differences(run, ref) + (f"  [{note}]" if note else "")
            what = said[key]
        values = "".join(f"  {getattr(run.config, name)!s:>{axis_w[name]}}" for name in axes)
        if states is not None:
            values += f"  {states.get(run.run_id, 'not run'):<9}"
        lines.append(
            f"{run.run_id:<12}  {run.cell:<{cell_w}}  {run.config.model:<8}  {run.config.seed:>4}{values}"
            f"  {ref_cell or '-':<{vs_w}}  {what}"
        )
    return "\n".join(lines) + "\n"


def _axis_key(run: PlannedRun, axes: list[str]) -> tuple:
    return (run.config.model, run.config.seed, *(getattr(run.config, name) for name in axes))


def _show(value: Any) -> str:
    if isinstance(value, tuple) and all(isinstance(v, tuple) for v in value):
        return ",".join(f"{a}:{b}" for a, b in value) or "off"
    return str(value)


def _explicit_cells(raw: Any, source: str) -> list[Cell]:
    if not isinstance(raw, list):
        raise UserError(f"{source}: cells must be an array of tables ([[cells]])")
    cells = []
    for index, item in enumerate(raw):
        table = _table(item, f"{source}: cells[{index}]")
        unknown = sorted(set(table) - {"name", "set", "compare_to"})
        if unknown or "name" not in table:
            raise UserError(
                f"{source}: cells[{index}] needs 'name' and optionally 'set' and 'compare_to', got {sorted(table)}"
            )
        name = str(table["name"])
        _check_name(f"{source}: cell name", name)
        compare_to = table.get("compare_to")
        if compare_to is not None and not isinstance(compare_to, str):
            raise UserError(f"{source}: cell {name!r}: compare_to must be a cell name, got {compare_to!r}")
        cells.append(Cell(name, checked_settings(table.get("set", {}), f"{source}: cell {name}'s set"), compare_to))
    return cells


def _check_axis(source: str, key: str, values: Any) -> None:
    if key not in _AXIS_KEYS:
        raise UserError(f"{source}: unknown axis {key!r}; valid: {', '.join(sorted(_AXIS_KEYS))}")
    if not isinstance(values, list) or not values:
        raise UserError(f"{source}: axis {key!r} must be a non-empty list, got {values!r}")
    if twice := [value for index, value in enumerate(values) if value in values[:index]]:  # one run, twice
        raise UserError(f"{source}: axis {key} lists {twice[0]} twice")


def _check_name(what: str, name: str) -> None:
    if not _NAME.match(name):
        raise UserError(
            f"{what} {name!r} may only use letters, digits and . _ + - (at most 64, no spaces or shell characters)"
        )


def _table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a table, got {value!r}")
    return value
