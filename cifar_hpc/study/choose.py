"""What the command line chooses from the grids: the grids there are (``grid list``), and the
overrides and filters of one grid that ``submit`` and ``grid show`` share, the way Hydra users
expect them:

* ``--set key=value`` (repeatable, dotted keys, the value read as TOML as ``train --set`` reads
  it): forced on every run, over the grid's base *and* each cell's own ``set`` (a command-line
  override wins). An axis key (``--set seed=3``, ``--set epochs=1`` when the grid has an epochs
  axis) replaces that axis by the one value, as ``--seeds`` does; given together with the axis's own
  option (``--set seed=3 --seeds 0-2``) it is refused. A ``--set`` that makes two cells the same
  run is refused by the grid's design check (``grid.expand``), naming the key.
* ``--cells a,b``: only these cells' runs. The other cells are still expanded (the design check
  sees the whole grid, and every run keeps the id it has without the filter). A chosen cell whose
  reference cell is left out is not given it silently: ``reference_notes`` says so once, since
  it costs runs the user did not ask for and is nothing when the reference already ran.
* ``--models a,b`` and ``--seeds 0-2``: replace the grid's model and seed axes.

Filters never change a run's id: a run chosen through them is the same run as without them, so a
filtered submit skips what already finished.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.keys import check_setting, setting_items
from cifar_hpc.config.settings import assignment, merge
from cifar_hpc.config.train_config import MODELS
from cifar_hpc.study.design import reference_of
from cifar_hpc.study.grid import grid_dirs, load_grid, override_axes, parse_seeds
from cifar_hpc.study.plan import Grid

LABELS = ("grid", "cell", "out_dir", "wandb.group")
"""Settings the grid gives each run itself (names, folders, the W&B group): not for ``--set``."""

AXIS_OPTIONS = {"seed": "--seeds", "model": "--models"}


def narrow(
    grid: Grid,
    *,
    sets: Sequence[str] = (),
    cells: str | None = None,
    models: str | None = None,
    seeds: str | None = None,
) -> Grid:
    """The grid as the command line wants it: ``--set`` forced on every run (axis keys replace
    their axis), ``--seeds``/``--models`` replacing those axes, ``--cells`` choosing cells."""
    forced = parse_sets(sets)
    axes: dict[str, list[Any]] = {}
    if seeds is not None:
        axes["seed"] = parse_seeds(seeds)
    if models is not None:
        axes["model"] = parse_models(models)
    for key in [key for key in forced if key in grid.axes or key in axes]:
        value = forced.pop(key)
        if key in axes:
            raise UserError(f"--set {key}={value} and {AXIS_OPTIONS[key]} both choose the {key}s; give one of them")
        if key == "model":
            parse_models(str(value))
        axes[key] = [value]  # the axis becomes this one value, as --seeds 3 would make it
    if axes:
        grid = override_axes(grid, axes)
    chosen = parse_cells(grid, cells) if cells is not None else grid.chosen
    return replace(grid, forced=merge(grid.forced, forced), chosen=chosen)


def parse_sets(texts: Sequence[str], option: str = "--set") -> dict[str, Any]:
    """``--set`` assignments merged into one nested dict, each key and value checked against
    TrainConfig at once (one line naming the ``--set`` for a mistake). Range checks that depend on
    other settings (the batch split across devices) come when the runs are built. ``option``: the
    flag named in messages (``collect --where`` reads its values the same way)."""
    forced: dict[str, Any] = {}
    for text in texts:
        one = assignment(text)
        for key, value in setting_items(one):  # a table value (optim={name="adam"}) checks each of its keys
            _check_setting(text, key, value, option)
        forced = merge(forced, one)
    return forced


def _check_setting(text: str, key: str, value: Any, option: str = "--set") -> None:
    if key in LABELS or key.split(".", 1)[0] in ("grid", "cell", "out_dir"):
        what = "it cannot be set" if option == "--set" else "not a setting"
        raise UserError(f"{option} {text}: {key} is given by the grid to each run; {what}")
    try:
        check_setting(key, value)  # the one check, which a grid's [base] and cells get too
    except UserError as error:
        raise UserError(f"{option} {text}: {error}") from None


def parse_models(spec: str) -> list[str]:
    """``--models resnet18,resnet34``: known model names, each once, in the order given."""
    return list(_names("--models", spec, MODELS, "model", "unknown model"))


def parse_cells(grid: Grid, spec: str) -> tuple[str, ...]:
    """``--cells +swa,+clip``: cells of ``grid``, each once; an unknown one is refused with the valid
    ones and the closest name."""
    return _names("--cells", spec, [cell.name for cell in grid.cells], "cell", f"grid {grid.name} has no cell")


def _names(option: str, spec: str, valid: Sequence[str], kind: str, unknown: str) -> tuple[str, ...]:
    """A comma list of names from ``valid``, each once, in the order given; one line for a mistake."""
    names = [part.strip() for part in spec.split(",")]
    if not all(names):
        raise UserError(f"{option} {spec!r}: give {kind} names separated by commas; valid: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise UserError(f"{option}: {unknown} {name!r}{_did_you_mean(name, valid)}; valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise UserError(f"{option} {spec!r} names a {kind} twice")
    return tuple(names)


def reference_notes(grid: Grid) -> list[str]:
    """One note per reference cell that ``--cells`` leaves out while a chosen cell is compared with it."""
    if grid.chosen is None:
        return []
    missing: dict[str, list[str]] = {}
    for name in grid.chosen:
        reference = reference_of(grid, name)
        if reference is not None and reference not in grid.chosen:
            missing.setdefault(reference, []).append(name)
    return [
        f"note: --cells leaves out {reference}, the reference of {', '.join(cells)}: the comparison lacks it "
        f"unless {reference}'s runs already ran (add it to --cells to run them too)"
        for reference, cells in missing.items()
    ]


def _did_you_mean(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- grid list --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridEntry:
    name: str
    path: Path
    grid: Grid | None
    error: str | None = None
    """Why the file is not a valid grid (it is listed all the same)."""

    @property
    def run_count(self) -> int:
        """Cells x the product of the axes: what ``grid show`` expands, counted without expanding."""
        grid = self.grid
        return len(grid.cells) * math.prod(len(values) for values in grid.axes.values()) if grid else 0


def list_grids(folders: Sequence[Path] | None = None) -> list[GridEntry]:
    """Every grid file in the grid folders (``./jobs`` first; a name found twice: the first wins)."""
    entries: dict[str, GridEntry] = {}
    for folder in folders if folders is not None else grid_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.stem in entries:
                continue
            try:
                entries[path.stem] = GridEntry(path.stem, path, load_grid(str(path)))
            except UserError as error:
                entries[path.stem] = GridEntry(path.stem, path, None, str(error))
    return sorted(entries.values(), key=lambda entry: entry.name)


def render_grid_list(entries: Sequence[GridEntry]) -> str:
    """One line per grid: name, run count, description (or why it is invalid)."""
    if not entries:
        return "no grids found (jobs/*.toml)\n"
    name_w = max(len(entry.name) for entry in entries)
    count_w = max(len(str(entry.run_count)) for entry in entries)
    lines = [
        f"{entry.name:<{name_w}}  {entry.run_count:>{count_w}} {'run ' if entry.run_count == 1 else 'runs'}  "
        + (entry.grid.description or "-" if entry.grid else f"INVALID: {entry.error}")
        for entry in entries
    ]
    return "\n".join(lines) + "\n"
