"""A study's plan as data: a grid's cells, the grid, and the runs it expands into.

Plain frozen dataclasses, so that the grid's reader and expansion (``study.grid``) and the design
checks (``study.design``) can both speak of them without importing each other. A planned run is
what ``submit`` intends to train; what a study folder records of a run is ``study.recorded.RecordedRun``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cifar_hpc.config.train_config import TrainConfig


@dataclass(frozen=True)
class Cell:
    name: str
    overrides: dict[str, Any]
    """Settings this cell changes relative to the grid's base (nested like TrainConfig)."""
    compare_to: str | None = None
    """The cell this one is compared with; None = the grid's baseline cell (for the baseline cell
    itself: none, it is the reference)."""


def axis_text(axes: Mapping[str, Any] | None, sep: str = "/") -> str:
    """A run's axis values but the model and the seed, ``epochs=2``; "" when it has none (or none is known)."""
    return sep.join(f"{name}={value}" for name, value in (axes or {}).items() if name not in ("model", "seed"))


def run_label(cell: str | None, model: str | None, seed: int | None, axes: Mapping[str, Any] | None = None) -> str:
    """A run named for people: ``lr4e-3/resnet18/epochs=2/seed 0``. Its cell, model, every other axis
    value but the seed (what tells two runs of one cell, model and seed apart), then its seed; ``?``
    for what is not known. Every line that names a run uses it: the dry run, COMPLETED/FAILED,
    ``collect``'s lists (``status --runs`` gives the same axes a column)."""
    extra = axis_text(axes)
    return "/".join([cell or "?", model or "?", *([extra] if extra else []), f"seed {'?' if seed is None else seed}"])


@dataclass(frozen=True)
class PlannedRun:
    cell: str
    config: TrainConfig
    axes: tuple[str, ...] = ()
    """The grid's axes other than the model and the seed (``grid.expand`` fills it in): their values
    in ``config`` tell this run from the others of its cell, model and seed."""

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def label(self) -> str:
        """``run_label``: ``lr4e-3/resnet18/epochs=2/seed 0``."""
        cfg = self.config
        return run_label(self.cell, cfg.model, cfg.seed, {name: getattr(cfg, name) for name in self.axes})


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    baseline_cell: str
    base: dict[str, Any]
    axes: dict[str, list[Any]]
    cells: tuple[Cell, ...]
    forced: dict[str, Any] = field(default_factory=dict)
    """Settings the command line forces on every run (``--set``, nested like TrainConfig): they win
    over the base and over each cell's own ``set`` (``cifar_hpc.narrow``)."""
    chosen: tuple[str, ...] | None = None
    """The cells to run (``--cells``); None: all. The others are still expanded, so that the design
    check (no two cells train the same thing) sees the whole grid."""
    notes: tuple[str, ...] = ()
    """What reading the grid decided on the user's behalf, one line each, for ``grid show`` and
    ``submit`` to print (generated ablation cells that another cell stands for)."""
