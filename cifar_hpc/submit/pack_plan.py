"""How a study's runs are packed into array tasks (``cifar-hpc submit --pack N|auto``).

Planning only, on the submitting side: the in-task runner that trains a pack is
``cifar_hpc.training.pack``.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from cifar_hpc.cluster.profiles import SIGNAL_EARLY_S, STARTUP_ALLOWANCE_S


def chunks(items: Sequence[Any], size: int) -> list[tuple[Any, ...]]:
    """``items`` in consecutive packs of at most ``size`` (the last may be smaller)."""
    if size < 1:
        raise ValueError(f"pack size must be >= 1, got {size}")
    return [tuple(items[start : start + size]) for start in range(0, len(items), size)]


AUTO_FILL = 0.8
"""``--pack auto`` fills this share of a task's usable time (its limit less the requeue signal's
lead, Slurm's jitter and the start-up allowance): the rest absorbs runs slower than the median."""


def auto_pack_size(walls: Sequence[float], time_min: int, signal_delay_s: int) -> int | None:
    """Runs per task for ``--pack auto``: as many runs of the median wall time (``walls``: the
    study's completed runs, seconds, start-up included, so the estimate errs long) as fill
    ``AUTO_FILL`` of the usable time; None without completed runs to measure."""
    walls = [w for w in walls if w and w > 0]
    if not walls:
        return None
    usable_s = time_min * 60 - signal_delay_s - SIGNAL_EARLY_S - STARTUP_ALLOWANCE_S
    return max(1, int(AUTO_FILL * usable_s // median(walls)))
