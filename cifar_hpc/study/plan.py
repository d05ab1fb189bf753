"""A study's plan as data: a grid's cells, the grid, and the runs it expands into.

Plain frozen dataclasses, so that the grid's reader and expansion (``study.grid``) and the design
checks (``study.design``) can both speak of them without importing each other. A planned run is
what ``submit`` intends to train; what a study folder records of a run is ``study.recorded.RecordedRun``.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class PlannedRun:
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
    forced: dict[str, Any] = field(default_factory=dict)
    """Settings the command line forces on every run (``--set``, nested like TrainConfig): they win
    over the base and over each cell's own ``set`` (``cifar_hpc.narrow``)."""
    chosen: tuple[str, ...] | None = None
    """The cells to run (``--cells``); None: all. The others are still expanded, so that the design
    check (no two cells train the same thing) sees the whole grid."""
