"""Does a grid's comparison measure what it says? Pure checks of a study's design.

A cell is compared with its reference (``reference_of``: its ``compare_to``, else the grid's
baseline cell; ``check_references`` validates them when a grid is parsed). What it *says* it
changes is the difference between the two configs as written; what it *does* change is the
difference between them as trained (``tricks.effective``: the clash resolutions applied). When the
two differ the comparison is labelled:

* ``confounded: also changes X`` — a resolution applies to one side only, so the pair differs in
  a setting neither cell wrote (removing SWA from a recipe with early stopping switches early
  stopping back on: two tricks measured as one);
* ``no effect: X=v is undone`` — a written change that a resolution reverts (early stopping added
  where SWA switches it off).

Two cells whose configs are the same as trained are not a comparison at all: ``grid.expand``
refuses them, naming the rule (``same_training``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cifar_hpc.base.errors import UserError
from cifar_hpc.config.identity import in_identity  # the one rule of what makes a run's identity
from cifar_hpc.config.settings import flatten
from cifar_hpc.training.tricks import Clash, applied_clashes, effective

if TYPE_CHECKING:
    from cifar_hpc.config.train_config import TrainConfig
    from cifar_hpc.study.plan import Grid, PlannedRun


def reference_of(grid: Grid, cell_name: str) -> str | None:
    """The cell a cell is compared with: its ``compare_to``, else the baseline cell; None for the
    baseline cell itself (the reference)."""
    cell = {c.name: c for c in grid.cells}[cell_name]
    if cell.compare_to is not None:
        return cell.compare_to
    return None if cell_name == grid.baseline_cell else grid.baseline_cell


def check_references(grid: Grid, source: str) -> None:
    """Each ``compare_to`` names another cell, not the baseline's, and no chain of them is a circle."""
    names = {cell.name for cell in grid.cells}
    for cell in grid.cells:
        ref = cell.compare_to
        if ref is None:
            continue
        if cell.name == grid.baseline_cell:
            raise UserError(
                f"{source}: baseline cell {cell.name!r} is the reference of the others; it cannot have compare_to"
            )
        if ref == cell.name:
            raise UserError(f"{source}: cell {cell.name!r}: compare_to names the cell itself")
        if ref not in names:
            raise UserError(
                f"{source}: cell {cell.name!r}: compare_to {ref!r} is not one of the cells: {', '.join(sorted(names))}"
            )
    for cell in grid.cells:
        path = [cell.name]
        while (ref := reference_of(grid, path[-1])) is not None:
            if ref in path:
                circle = [*path[path.index(ref) :], ref]
                raise UserError(f"{source}: compare_to goes round in a circle: {' -> '.join(circle)}")
            path.append(ref)


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that make the run id, as dotted keys (labels, paths, logging, devices left out)."""
    return {key: value for key, value in flatten(cfg.to_dict()) if in_identity(key)}


def changes(cfg: TrainConfig, reference: TrainConfig) -> dict[str, Any]:
    """The identity settings in which ``cfg`` differs from ``reference``, with ``cfg``'s values."""
    mine, theirs = identity(cfg), identity(reference)
    return {key: value for key, value in mine.items() if theirs.get(key) != value}


def compared_settings(grid: Grid, runs: Sequence[PlannedRun], every: Sequence[PlannedRun]) -> dict[str, list[str]]:
    """Run id -> the settings its comparison changes: the identity keys in which it differs (either
    way) from its reference cell's run at the same axis values and seed, found in ``every`` (the whole
    grid's runs, so that a reference left out by ``--cells`` counts); [] for a reference. ``study.json``
    records them: ``collect`` compares a row only with a reference differing in exactly these."""

    def place(run: PlannedRun) -> tuple:
        return tuple(getattr(run.config, name) for name in grid.axes)

    by_place = {(run.cell, place(run)): run for run in every}
    compared: dict[str, list[str]] = {}
    for run in runs:
        reference = reference_of(grid, run.cell)
        other = by_place.get((reference, place(run))) if reference is not None else None
        if reference is None:
            compared[run.run_id] = []
        elif other is not None:
            keys = set(changes(run.config, other.config)) | set(changes(other.config, run.config))
            compared[run.run_id] = sorted(keys)
    return compared


def comparison_note(run: PlannedRun, reference_run: PlannedRun) -> str | None:
    """None when the pair differs as trained exactly as written; else what else differs and why."""
    written = changes(run.config, reference_run.config)
    trained = changes(effective(run.config), effective(reference_run.config))
    if written == trained:
        return None
    clashes = _clashes(run.config, reference_run.config)
    also = [key for key in trained if written.get(key, _MISSING) != trained[key]]
    undone = [key for key in written if key not in trained]
    notes = []
    if also:
        notes.append(f"confounded: also changes {', '.join(also)}{_why(clashes, also)}")
    if undone:
        shown = ", ".join(f"{key}={written[key]}" for key in undone)
        notes.append(f"no effect: {shown} {'is' if len(undone) == 1 else 'are'} undone{_why(clashes, undone)}")
    return "; ".join(notes)


def same_training(a: TrainConfig, b: TrainConfig) -> str:
    """Why two configs that differ as written train the same thing: the rules that made them equal."""
    clashes = _clashes(a, b)
    return "; ".join(clash.rule for clash in clashes) or "the same settings"


_MISSING = object()


def _clashes(a: TrainConfig, b: TrainConfig) -> list[Clash]:
    """The resolutions that apply to either config, each once, in ``CLASHES`` order."""
    found = applied_clashes(a)
    return found + [clash for clash in applied_clashes(b) if clash not in found]


def _why(clashes: list[Clash], keys: list[str]) -> str:
    rules = [clash.rule for clash in clashes if set(clash.keys) & set(keys)]
    return f" ({'; '.join(rules)})" if rules else ""
